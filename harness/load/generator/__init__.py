"""The code that runs inside Locust's processes (`locust -f harness/load/generator/locustfile.py`): the
simulated users and the exact statistics. Locust patches the processes that import it with gevent, so the
pytest side never imports this package; it starts Locust and reads the files Locust writes."""
