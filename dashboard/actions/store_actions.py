"""Actions on perfdeck's own store: purge old raw data, compact the rollups and checkpoint the file.

Both write the DuckDB file from the dashboard, so they keep to the store's short-write discipline: one
transaction per table, so the collector daemon gets the file back between two of them (it waits with
jittered retries) and an Abort between tables leaves every table whole."""
from __future__ import annotations

from datetime import datetime, timedelta

from collectors import formatting as fmt
from collectors.store import connection, read, utcnow, write
from collectors.store.retention import count_expired, purge_table, retention_days
from collectors.store.rollups import compact, mergeable, roll_tiers
from dashboard.actions.framework import Action, Field, InvalidInput, Preview, Progress, Result

MAX_DAYS = 3650



class _StoreAction(Action):
    kind = "store"

    def __init__(self, db=None):
        self.db = db                 # None: $PERFDECK_DB, else data/perfdeck.duckdb

    @property
    def confirm_word(self) -> str:
        return connection.db_path(self.db).name

    def available(self) -> str | None:
        path = connection.db_path(self.db)
        return None if path.exists() else f"no store at {path.name} yet"


class PurgeRawData(_StoreAction):
    name = "store.purge_raw"
    title = "Purge old raw data"
    touches = "raw request events and raw samples in perfdeck's store (rollups keep their history)"
    destructive = True
    batched = True

    def fields(self) -> list[Field]:
        return [Field("days", "Keep the last N days of raw data", kind="int", default=retention_days()["raw"],
                      help="Percentiles over any range come from the rollups, which this leaves alone.")]

    def check(self, params: dict) -> dict:
        days = params.get("days")
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise InvalidInput(f"days must be a whole number from 1 to {MAX_DAYS}, not {str(days)[:40]!r}")
        return {"days": days}

    def preview(self, params: dict) -> Preview:
        now = utcnow()
        cutoff = now - timedelta(days=params["days"])
        with read(self.db) as con:
            counts = count_expired(con, now, {"raw": params["days"]})
        total = sum(counts.values())
        return Preview(
            summary=f"Delete {total:,} raw rows older than {params['days']} days (before "
                    f"{cutoff:%Y-%m-%d %H:%M} UTC) from {sum(1 for n in counts.values() if n)} tables.",
            rows=[{"table": t, "rows to delete": n} for t, n in counts.items()],
            count=total, confirm=self.confirm_word, data={"now": now.isoformat(), "counts": counts},
        )

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        cutoff = datetime.fromisoformat(preview.data["now"]) - timedelta(days=params["days"])
        deleted: dict[str, int] = {}
        progress.step(0, preview.count)
        for table, expected in preview.data["counts"].items():
            if expected:
                with write(self.db) as con:       # one short transaction per table
                    deleted[table] = purge_table(con, table, cutoff)
            progress.step(sum(deleted.values()), preview.count, table)
        total = sum(deleted.values())
        return Result(f"Deleted {total:,} raw rows older than {params['days']} days.",
                      {"rows_deleted": total, "by_table": deleted})


class CompactStore(_StoreAction):
    name = "store.compact"
    title = "Compact and checkpoint the store"
    touches = "perfdeck's store: merges duplicate rollup rows and writes the WAL into the file"
    batched = True

    def preview(self, params: dict) -> Preview:
        with read(self.db) as con:
            counts = mergeable(con)
        total = sum(counts.values())
        size = connection.db_path(self.db).stat().st_size
        return Preview(
            summary=f"Merge {total:,} duplicate rollup rows in {len(counts)} tables, then CHECKPOINT "
                    f"the {fmt.size(size)} file.",
            statements=["CHECKPOINT"],
            rows=[{"table": t, "rows to merge": n} for t, n in counts.items()],
            count=total, data={"size": size},
        )

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        progress.step(0, 2, "merging rollup rows")
        with write(self.db) as con:
            removed = compact(con, datetime(1970, 1, 1), datetime(9999, 1, 1))
            roll_tiers(con, utcnow())      # and every hour and day tier checked against its minutes
        progress.step(1, 2, "checkpoint")
        connection.checkpoint(self.db)
        size = connection.db_path(self.db).stat().st_size
        return Result(f"Merged {removed:,} rollup rows; the file is {fmt.size(size)} (was {fmt.size(preview.data['size'])}).",
                      {"rows_merged": removed, "bytes_before": preview.data["size"], "bytes_after": size})


ACTIONS = [PurgeRawData, CompactStore]
