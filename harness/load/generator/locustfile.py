"""The harness's load run, runnable with Locust alone:

    locust -f harness/load/generator/locustfile.py --host https://api.example.com --headless -u 20 -r 5 \
        -t 5m --accounts-file accounts.json --rate-per-s 50 --ramp-s 30 --results-file reports/load.json

Locust patches the process with gevent, so it runs in processes of its own (standalone, or a master and
its workers); the pytest side only reads the results file it writes.
"""
from locust import events

from harness.load.generator import journeys, stats

stats.add_listeners(events)
journeys.add_listeners(events)
ApiUser = journeys.ApiUser  # the user class Locust runs: it looks for them in this module
