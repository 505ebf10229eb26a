# The harness's pytest plugin is registered as an entry point (harness.plugin); nothing else belongs here.
