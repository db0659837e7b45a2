"""The DuckDB store: schema migrations, the single-writer connection discipline, ingest, rollups
and retention."""
from collectors.store.connection import (
                                         StoreBusy,
                                         StoreLocked,
                                         StoreMissing,
                                         StoreUnavailable,
                                         db_path,
                                         next_id,
                                         read,
                                         utcnow,
                                         write,
)
from collectors.store.migrations import migrate

__all__ = ["StoreBusy", "StoreLocked", "StoreMissing", "StoreUnavailable", "db_path", "migrate", "next_id", "read", "utcnow",
           "write"]
