"""Pure helpers of the load suite, importable by pytest: they never import Locust or gevent, which patch
the process they are imported into."""
