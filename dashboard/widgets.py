"""Sidebar filters, cached data loading and CSV export shared by every page.

The only place that touches Streamlit's cache and the store connection: `load()` takes a read cursor
per cache miss (`collectors.store.read()`: the process's shared read-only connection, which gives the
file back as soon as the collector wants to write), runs the page's queries on it and closes it.
Every query is bounded in time and memory (`dashboard.queries._run`); one that goes past a bound
shows the "too slow, narrow the range" panel here, for every page."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pandas as pd
import streamlit as st

from collectors.health import assess
from collectors.redact import redact
from collectors.store import StoreLocked, StoreMissing, StoreUnavailable, db_path, read, utcnow
from collectors.store.connection import store_spec
from collectors.store.lake import Lake, LakeUnavailable
from dashboard import charts, columns, queries
from dashboard.charts import _HIDDEN, plot_text  # noqa: F401 - pages escape Plotly text as widgets.plot_text
from dashboard.queries._run import QueryLimitExceeded, QueryTooSlow, query_timeout_s
from dashboard.queries.storage import store_name

CACHE_TTL_S = 10
# Relative ranges end at "now" rounded down to this, so reruns within it share cache entries.
NOW_GRANULARITY_S = 10

# Labels double as the URL value (?range=Last+7+days): the browser binds the displayed text.
RANGES = {
    "Last 15 minutes": timedelta(minutes=15),
    "Last hour": timedelta(hours=1),
    "Last 6 hours": timedelta(hours=6),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
}
CUSTOM = "Custom range"
DEFAULT_RANGE = "Last 24 hours"
REFRESH = {"off": "Off", "10": "10 s", "30": "30 s", "60": "60 s"}
ALL_SERVICES = "All services"
HOW_TO_GET_DATA = (
    "Run `perfdeck demo` for a live demo with sample traffic, or `perfdeck collect` to start "
    "collecting from your instrumented services."
)

# Recorded names (endpoints, services, caches, versions, models, users, tables) are text. In markdown
# (st.markdown, callouts, captions, badges, expander labels, tooltips) the characters that start markup
# mid-line are backslash-escaped (emphasis, code, links and images, HTML, $maths$, ~strike~, entities),
# and at the start of a line the ones that open a block (heading, quote, list). Streamlit looks for
# :material/icons:, :emoji: and :colour[directives] after unescaping, so a colon followed by anything but
# a space gets a zero-width space after it; the same space breaks GFM's autolinks ("http://", "www.", "a@b.c").
_MARKDOWN = re.compile(r"([\\`*_\[\]<$~&])")
_BLOCK = re.compile(r"^(\s*\d*)([#>+\-=|]|(?<=\d)[.)])")
_ZWSP = "\u200b"
_AUTOLINK = re.compile(r"(?i)(www)(\.)|(@)")
_COLON = re.compile(r":(?=\S)")    # only a colon something follows can open an icon, a directive or a URL


def as_text(value) -> str:
    """A recorded name (or any text that came from data) escaped for a markdown context, on one line."""
    text = _MARKDOWN.sub(r"\\\1", _HIDDEN.sub("\ufffd", " ".join(str(value).splitlines())))
    text = _BLOCK.sub(lambda m: m[1] + "\\" + m[2], text)
    text = _AUTOLINK.sub(lambda m: (m[1] + _ZWSP + m[2]) if m[1] else m[3] + _ZWSP, text)
    return _COLON.sub(":" + _ZWSP, text)


@dataclass(frozen=True)
class TimeRange:
    """A relative span ending now, or a fixed [start, end) window; resolved at each (fragment)
    rerun so an auto-refreshing page moves with the clock."""

    label: str
    span: timedelta | None = None
    start: datetime | None = None
    end: datetime | None = None

    def bounds(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        if self.span is None:
            return self.start, self.end
        now = now or utcnow()
        until = now.replace(microsecond=0) - timedelta(seconds=now.second % NOW_GRANULARITY_S)
        return until - self.span, until


@dataclass(frozen=True)
class Filters:
    range: TimeRange
    service: str | None
    refresh_s: int | None


def sidebar_filters() -> Filters:
    """Time range, service and auto-refresh pickers in the sidebar; bound to the URL so a view
    can be shared as a link and survives a page change:
    `?range=Last+7+days&service=api`, or `?range=Custom+range&range_from=2026-12-01T10:00&range_to=2026-12-01T12:00`.
    A value in the URL that names no range, service or time is dropped, and a caption says so."""
    sb = st.sidebar
    sb.header("Filters")
    names = [ALL_SERVICES, *service_names()]
    ignored = _invalid_url_values(names)
    label = sb.selectbox(
        "Time range", [*RANGES, CUSTOM], index=list(RANGES).index(DEFAULT_RANGE),
        key="range", bind="query-params",
    )
    rng = _custom_range(sb) if label == CUSTOM else TimeRange(label, span=RANGES[label])
    service = sb.selectbox("Service", names, key="service", bind="query-params")
    refresh = sb.selectbox(
        "Auto-refresh", list(REFRESH), format_func=REFRESH.get, key="refresh",
        help="Re-query the store on a timer; the filters above stay as they are.",
    )
    if ignored:
        sb.caption(f"Ignored from the link: {', '.join(ignored)} (not a known value).")
    return Filters(
        range=rng,
        service=None if service in (None, ALL_SERVICES) else service,
        refresh_s=None if refresh == "off" else int(refresh),
    )


def _url_time(text: str) -> datetime | None:
    """A custom range's end as the URL carries it (ISO 8601, `2026-12-01T10:00`); None if it is not one."""
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        return None


def _invalid_url_values(services: list[str]) -> list[str]:
    """Names of the filter parameters in the URL whose value would be ignored. Services are only
    judged when the store answered (an empty list means it could not say)."""
    qp = st.query_params
    bad = []
    if "range" in qp and qp["range"] not in (*RANGES, CUSTOM):
        bad.append("range")
    bad += [k for k in ("range_from", "range_to") if qp.get(k) and _url_time(qp[k]) is None]
    if "service" in qp and len(services) > 1 and qp["service"] not in services:
        bad.append("service")
    return bad


def _custom_range(sb) -> TimeRange:
    now = utcnow().replace(second=0, microsecond=0)
    # Defaults go through session state once, so the inputs don't reset as "now" moves; an end
    # given in the URL (a shared link, or the previous page) wins over the default.
    url = st.query_params
    if _url_time(url.get("range_from", "")) is None:
        st.session_state.setdefault("range_from", now - timedelta(hours=24))
    if _url_time(url.get("range_to", "")) is None:
        st.session_state.setdefault("range_to", now)
    start = sb.datetime_input("From (UTC)", key="range_from", format="YYYY-MM-DD",
                              bind="query-params", persist_state="session")
    end = sb.datetime_input("To (UTC)", key="range_to", format="YYYY-MM-DD",
                            bind="query-params", persist_state="session")
    start, end = start or now - timedelta(hours=24), end or now
    if start >= end:
        sb.warning("“From” is after “To”: showing the range the other way round.")
        start, end = end, start
    return TimeRange(CUSTOM, start=start.replace(tzinfo=None), end=end.replace(tzinfo=None))


def service_names() -> list[str]:
    """Services that have reported requests; [] when the store is missing, empty, busy or unreachable."""
    try:
        frames = _cached(store_spec(db_path()), (("services", ()),))
    except (StoreMissing, StoreLocked, LakeUnavailable, duckdb.Error):
        return []  # the page body explains what is wrong
    return [] if isinstance(frames, _OverLimit) else frames[0]["service"].tolist()


def live(body: Callable[[], None], filters: Filters) -> None:
    """Run a page body, re-running just it every `filters.refresh_s` seconds when set."""
    st.fragment(body, run_every=filters.refresh_s)()


@dataclass(frozen=True)
class _OverLimit:
    """A query group that went past a bound, cached like a result: a page refreshing every 10 s does
    not run the same over-long query again at every rerun."""

    too_slow: bool
    detail: str


@st.cache_data(ttl=CACHE_TTL_S, max_entries=256, show_spinner=False)
def _cached(db: str, calls: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]) -> list[pd.DataFrame] | _OverLimit:
    # Functions are named (not passed) so the cache key is plain data; exceptions are not cached.
    try:
        with read(db) as con:
            frames = [getattr(queries, name)(con, **dict(kwargs)) for name, kwargs in calls]
    except QueryLimitExceeded as exc:
        return _OverLimit(isinstance(exc, QueryTooSlow), str(exc))
    for frame in frames:      # names this result for shared(), which would otherwise hash its content
        frame.attrs["result"] = uuid.uuid4().hex
    return frames


def load(calls: dict[str, Callable[..., pd.DataFrame]], **params: Any) -> dict[str, pd.DataFrame] | None:
    """Run `dashboard.queries` functions with the same keyword params on one short connection
    (cached for CACHE_TTL_S). On a missing, empty or locked store, say so and return None."""
    for fn in calls.values():
        if fn.__name__ not in queries.__all__:
            raise ValueError(f"{fn.__name__} is not a dashboard.queries function")
    frozen = tuple(sorted(params.items()))
    try:
        path = db_path()
        frames = _cached(store_spec(path), tuple((fn.__name__, frozen) for fn in calls.values()))
    except (StoreMissing, duckdb.CatalogException) as exc:
        if isinstance(path, Lake):        # no catalog there yet, or no tables in it
            no_data_yet(f"The lake {as_text(store_name(path))} has not been initialised.")
        elif isinstance(exc, StoreMissing):
            no_data_yet(f"There is no perfdeck store at `{path}` yet.")
        else:
            no_data_yet(f"The store at `{path}` has not been initialised.")
        return None
    except LakeUnavailable as exc:      # a lake as configured cannot be opened: extensions, data path missing
        st.error(f"**The store cannot be opened.** {as_text(exc)}", icon=":material/error:")
        return None
    except StoreUnavailable as exc:     # a lake whose catalog database or data path did not answer
        said = str(exc)        # "the lake <name> is not answering: <why>"
        st.warning(f"{as_text(said[:1].upper() + said[1:])}. This view tries again on the next refresh "
                   "(or reload the page).", icon=":material/cloud_off:")
        return None
    except StoreLocked:                 # the file only: a lake's reads are snapshots and never wait
        st.warning(
            "The store is busy: the collector held it longer than expected. This view will try "
            "again on the next refresh (or reload the page).", icon=":material/hourglass:",
        )
        return None
    if isinstance(frames, _OverLimit):
        too_slow(frames)
        return None
    for frame in frames:      # each call gets its own copy: the result's name holds for this copy only
        frame.attrs["copy"] = id(frame)
    return dict(zip(calls, frames))


def too_slow(over: _OverLimit) -> None:
    """The panel shown in place of data whose query went past its time or memory bound."""
    if over.too_slow:
        why = (f"Its query ran longer than the {query_timeout_s():g} s allowed "
               "(`PERFDECK_QUERY_TIMEOUT_S`) and was stopped.")
    else:
        why = "Its query needed more memory than the dashboard allows (`PERFDECK_READ_MEMORY_LIMIT`) and was stopped."
    st.warning(f"**Too slow — narrow the range.** {why} Pick a shorter time range or a single service; "
               "this view tries again on the next refresh.", icon=":material/timer_off:")


def no_data_yet(reason: str = "Nothing has been recorded yet.") -> None:
    st.info(f"**No data yet.** {reason} {HOW_TO_GET_DATA}", icon=":material/info:")


def range_caption(since: datetime, until: datetime) -> None:
    st.caption(f"{since:%Y-%m-%d %H:%M} → {until:%Y-%m-%d %H:%M} UTC · updated {utcnow():%H:%M:%S} UTC")


def csv_download(df: pd.DataFrame, name: str, *, label: str = "Download CSV") -> None:
    """A download button for `df` as `perfdeck-<name>.csv`; time columns get a `_utc` suffix so
    the file says what its timestamps are. Text is redacted: no page's CSV carries a secret."""
    def contents() -> str:     # made on the click, not at every rerun of every viewer
        out = df.rename(columns={c: f"{c}_utc" for c in df.columns if pd.api.types.is_datetime64_any_dtype(df[c])})
        return redact(out.to_csv(index=False))

    st.download_button(
        label, contents, file_name=f"perfdeck-{name}.csv", mime="text/csv",
        key=f"csv-{name}", on_click="ignore", icon=":material/download:", type="tertiary",
    )


def table(df: pd.DataFrame, name: str, *, csv: pd.DataFrame | None = None, **dataframe_kwargs: Any) -> None:
    """Every table goes through here: shown readable (see `dashboard.columns`), with its CSV download of
    the raw values (`csv` when the frame shown already holds text), and a note when cut off."""
    shown, config = columns.readable(df, dataframe_kwargs.pop("column_config", None) or {})
    st.dataframe(shown, hide_index=True, column_config=config, **dataframe_kwargs)
    if df.attrs.get("truncated"):
        st.caption(f"Showing the first {len(df):,} rows.")
    csv_download(df if csv is None else csv, name)


def down_components(df: pd.DataFrame, what: str) -> None:
    """A red callout per watched component that is down (from `queries.component_status`), with
    its error and since when. Redacted again here: rows written by an older collector may hold one."""
    for row in df[df["status"] == "down"].itertuples(index=False):
        last_ok = f" Last answered {row.last_ok:%Y-%m-%d %H:%M} UTC." if pd.notna(row.last_ok) else ""
        target = f" ({as_text(redact(row.target))})" if isinstance(row.target, str) and row.target else ""
        error = f" Error: {as_text(redact(row.error))}." if isinstance(row.error, str) and row.error else ""
        st.error(f"**{what} {as_text(row.name)}{target} is down** since {row.since:%Y-%m-%d %H:%M} UTC "
                 f"(checked {row.checked_at:%H:%M:%S} UTC).{error}{last_ok}", icon=":material/error:")


# Modules whose functions `shared` may run: pure functions of frames (figure builders, the pages'
# summaries of query results, the health verdicts), whose values are never changed by their callers.
SHAREABLE = {m.__name__: m for m in (charts, queries, assess)}


def shared(fn: Callable[..., Any], *args: Any, **kwargs: Any):
    """`fn(*args, **kwargs)` computed once per distinct input for every session: fifty viewers of a page
    refreshing on the same cached data share one figure (Plotly's figure building was half of a rerun)
    and one of each summary instead of each making its own. The value is shared, so it must not be
    changed afterwards. A frame as `load()` returned it is known by its result's name; any other frame
    (one derived from it too) by its content."""
    module = next((name for name, m in SHAREABLE.items() if getattr(m, fn.__name__, None) is fn), None)
    if module is None:
        raise ValueError(f"{fn.__name__} is not a function of {', '.join(SHAREABLE)}")
    return _shared(module, fn.__name__, args, kwargs)


def _frame_key(df: pd.DataFrame) -> str | bytes:
    if df.attrs.get("copy") == id(df) and df.attrs.get("result"):
        return df.attrs["result"]
    return (pd.util.hash_pandas_object(df.dtypes).to_numpy().tobytes()
            + pd.util.hash_pandas_object(df).to_numpy().tobytes())


@st.cache_resource(ttl=CACHE_TTL_S, max_entries=512, show_spinner=False, hash_funcs={pd.DataFrame: _frame_key})
def _shared(module: str, name: str, args: tuple, kwargs: dict):
    return getattr(SHAREABLE[module], name)(*args, **kwargs)


def chart(fig, data: pd.DataFrame | None, name: str) -> None:
    """A Plotly chart, with its data as a CSV download when given."""
    st.plotly_chart(fig, key=f"chart-{name}")
    if data is not None:
        csv_download(data, name, label="Download chart data (CSV)")
