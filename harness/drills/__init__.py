"""Disaster-recovery drills: failover, task loss, with RTO and RPO measured by probes from the client side."""
