"""What the self-tests share: running a whole suite as its own process, ports, waiting, the stand-in's fixtures."""
