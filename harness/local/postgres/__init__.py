"""The local stand-in of RDS PostgreSQL Multi-AZ (see `pair.py`): a primary, its synchronous standby, the WAL
archive, base backups and point-in-time restores, on loopback."""
from harness.local.postgres.config import RELOCATION_BASE, DatabaseConfig, state_dir
from harness.local.postgres.pair import PostgresPair
from harness.local.postgres.restore import DISCARD_TIMEOUT

__all__ = ["DISCARD_TIMEOUT", "RELOCATION_BASE", "DatabaseConfig", "PostgresPair", "state_dir"]
