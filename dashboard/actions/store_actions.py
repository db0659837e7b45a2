"""Actions on perfdeck's own store: purge old raw data, compact the rollups and checkpoint the store.

Both write the store from the dashboard, so they keep to the store's short-write discipline: one
transaction per table, so the collector daemon gets the store back between two of them (it waits with
jittered retries) and an Abort between tables leaves every table whole.

The store is the DuckDB file or a lake (collectors.store.lake). What differs is said where it is shown:
the lake is named without its secrets (`Lake.name`), its size is that of its Parquet files (from its
catalog: dashboard.queries.storage), and its CHECKPOINT is DuckLake's maintenance (inlined rows flushed to
Parquet, small files merged, expired snapshots and unused files removed), not a WAL written into a file."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from collectors import formatting as fmt
from collectors.store import StoreBusy, StoreLocked, StoreMissing, StoreUnavailable, connection, read, utcnow, write
from collectors.store.lake import KEEP_SNAPSHOTS, Lake, LakeUnavailable
from collectors.store.retention import count_expired, purge_table, retention_days
from collectors.store.rollups import compact, mergeable, roll_tiers
from dashboard.actions.framework import Action, Field, InvalidInput, Preview, Progress, Result, TargetUnavailable
from dashboard.queries.storage import folder_bytes, lake_storage

MAX_DAYS = 3650


def lake_catalog(store: Lake) -> str:
    """The name of the lake's catalog database (its conninfo's dbname, else its user's, as libpq does)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(store.conninfo)
    except Exception:          # a conninfo psycopg cannot split: the lake connects or fails elsewhere
        parts = {}
    return str(parts.get("dbname") or parts.get("user") or "ducklake")


@contextmanager
def _store_errors() -> Iterator[None]:
    """A store that cannot be read or written now (busy, gone, an unreachable lake catalog) is one clear
    line on the page (and an audited failure), not a traceback."""
    try:
        yield
    except (LakeUnavailable, StoreMissing, StoreUnavailable) as exc:
        raise TargetUnavailable(str(exc)) from None
    except StoreBusy as exc:          # a lake commit that lost to another writer's: it wrote nothing
        raise TargetUnavailable(f"{exc}; try again") from None
    except StoreLocked as exc:
        raise TargetUnavailable(f"{exc}; this step changed nothing: try again") from None


class _StoreAction(Action):
    kind = "store"

    def __init__(self, db=None):
        self.db = db                 # None: $PERFDECK_DB, else data/perfdeck.duckdb

    @property
    def store(self) -> Path | Lake:
        return connection.db_path(self.db)

    @property
    def confirm_word(self) -> str:
        """What a destructive action asks to be typed: the file's name, or the lake's catalog database."""
        store = self.store
        return lake_catalog(store) if isinstance(store, Lake) else store.name

    def available(self) -> str | None:
        try:
            store = self.store
        except LakeUnavailable as exc:           # e.g. a lake spec without its data path
            return str(exc)
        if isinstance(store, Lake):              # made by its first collector; an unreachable one says so at Preview
            return None
        return None if store.exists() else f"no store at {store.name} yet"


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
        with _store_errors(), read(self.db) as con:
            counts = count_expired(con, now, {"raw": params["days"]})
        total = sum(counts.values())
        store = self.store
        where = f" of the lake {store.name}" if isinstance(store, Lake) else ""
        return Preview(
            summary=f"Delete {total:,} raw rows older than {params['days']} days (before "
                    f"{cutoff:%Y-%m-%d %H:%M} UTC) from {sum(1 for n in counts.values() if n)} tables{where}.",
            rows=[{"table": t, "rows to delete": n} for t, n in counts.items()],
            count=total, confirm=self.confirm_word, data={"now": now.isoformat(), "counts": counts},
        )

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        cutoff = datetime.fromisoformat(preview.data["now"]) - timedelta(days=params["days"])
        deleted: dict[str, int] = {}
        progress.step(0, preview.count)
        for table, expected in preview.data["counts"].items():
            if expected:
                with _store_errors(), write(self.db) as con:       # one short transaction per table
                    deleted[table] = purge_table(con, table, cutoff)
            progress.step(sum(deleted.values()), preview.count, table)
        total = sum(deleted.values())
        return Result(f"Deleted {total:,} raw rows older than {params['days']} days.",
                      {"rows_deleted": total, "by_table": deleted})


class CompactStore(_StoreAction):
    name = "store.compact"
    title = "Compact and checkpoint the store"
    batched = True

    @property
    def touches(self) -> str:
        if isinstance(self.store, Lake):
            return ("perfdeck's store (a DuckLake): merges duplicate rollup rows, then DuckLake's maintenance "
                    "of its Parquet files")
        return "perfdeck's store: merges duplicate rollup rows and writes the WAL into the file"

    def _size(self) -> dict:
        """The store's size now: the file's bytes, or the lake's files (dashboard.queries.storage)."""
        store = self.store
        if not isinstance(store, Lake):
            return {"size": store.stat().st_size}
        with read(store) as con:
            row = lake_storage(con).iloc[0]
        return {"size": int(row.live_bytes), "files": int(row.live_files), "kept_bytes": int(row.kept_bytes),
                "kept_files": int(row.kept_files), "scheduled_files": int(row.scheduled_files),
                "folder_bytes": folder_bytes(store.data_path), "snapshots": int(row.snapshots)}

    def preview(self, params: dict) -> Preview:
        with _store_errors():
            with read(self.db) as con:
                counts = mergeable(con)
            size = self._size()
        total = sum(counts.values())
        merge = f"Merge {total:,} duplicate rollup rows in {len(counts)} tables, then CHECKPOINT"
        if "files" not in size:
            summary = f"{merge} the {fmt.size(size['size'])} file."
        else:
            summary = (f"{merge} the lake: DuckLake's maintenance flushes rows held in its catalog to Parquet, "
                       f"merges small files, expires snapshots older than {KEEP_SNAPSHOTS} and removes files unused "
                       f"for {KEEP_SNAPSHOTS}. {_lake_size(size)}")
        return Preview(
            summary=summary, statements=["CHECKPOINT"],
            rows=[{"table": t, "rows to merge": n} for t, n in counts.items()],
            count=total, data=size,
        )

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        progress.step(0, 2, "merging rollup rows")
        with _store_errors(), write(self.db) as con:
            removed = compact(con, datetime(1970, 1, 1), datetime(9999, 1, 1))
            roll_tiers(con, utcnow())      # and every hour and day tier checked against its minutes
        progress.step(1, 2, "checkpoint")
        with _store_errors():
            connection.checkpoint(self.db)
            after = self._size()
        before = preview.data
        figures = {"rows_merged": removed, "bytes_before": before["size"], "bytes_after": after["size"]}
        if "files" not in after:
            return Result(f"Merged {removed:,} rollup rows; the file is {fmt.size(after['size'])} "
                          f"(was {fmt.size(before['size'])}).", figures)
        figures |= {"files_before": before["files"], "files_after": after["files"],
                    "folder_bytes_after": after["folder_bytes"]}
        return Result(f"Merged {removed:,} rollup rows; the lake's current data are {fmt.size(after['size'])} in "
                      f"{after['files']:,} Parquet files (were {fmt.size(before['size'])} in {before['files']:,})"
                      f"{_kept(after)}.", figures)


def _kept(size: dict) -> str:
    """What the lake holds on storage besides its current data, and when that goes."""
    older = size["kept_files"] + size["scheduled_files"]
    folder = size.get("folder_bytes")
    held = f"its data folder holds {fmt.size(folder)} in all" if folder is not None else ""
    if not older:
        return f"; {held}" if held else ""
    files = (f"{older:,} files of older snapshots or replaced by merges"
             + ("" if held else f" (at least {fmt.size(size['kept_bytes'])})"))
    return (f"; {held + ', with ' if held else ''}{files}, kept for readers of those snapshots until unused "
            f"for {KEEP_SNAPSHOTS} (a maintenance run after that removes them)")


def _lake_size(size: dict) -> str:
    return f"Its current data: {fmt.size(size['size'])} in {size['files']:,} Parquet files{_kept(size)}."


ACTIONS = [PurgeRawData, CompactStore]
