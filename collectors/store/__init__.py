"""The DuckDB store: schema migrations, the single-writer connection discipline, ingest, rollups
and retention."""
from collectors.store.connection import StoreLocked, StoreMissing, db_path, read, utcnow, write
from collectors.store.migrations import migrate

__all__ = ["StoreLocked", "StoreMissing", "db_path", "migrate", "read", "utcnow", "write"]
