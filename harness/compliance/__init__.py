"""The nightly compliance suite: one snapshot of the account, and the facts the checks read from it."""
