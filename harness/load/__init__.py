"""The load suite's library. Its modules are importable by pytest: they never import Locust or gevent,
which patch the process they are imported into; only generator/ does, and it runs in Locust's processes."""
