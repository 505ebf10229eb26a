"""The harness's load run, runnable with Locust alone:

    locust -f load/locustfile.py --host https://api.example.com --headless -u 20 -r 5 -t 5m \
        --accounts-file accounts.json --rate-per-s 50 --ramp-s 30 --results-file reports/load.json

Locust patches the process with gevent, so it runs in processes of its own (standalone, or a master and
its workers); the pytest side only reads the results file it writes.
"""
import exact_stats  # noqa: F401  (registers the exact-statistics plugin)
from journeys import ApiUser  # noqa: F401  (the user class Locust runs)
