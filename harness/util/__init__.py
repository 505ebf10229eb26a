"""Helpers every part of the harness and its self-tests share: processes bound to the harness (proc), ports
(net), waiting for a condition (wait), atomic files (files), and redaction of secrets (redact)."""
