"""The embedded environment: an AWS emulator on loopback, and what is provisioned into it."""
