"""Table columns by kind of value: one display format per kind, in the units `collectors.formatting`
writes, for every page's tables.

    COLUMNS = {"endpoint": columns.text("Endpoint"), "requests": columns.count("Requests"),
               "p95_ms": columns.ms("p95 (ms)"), "spend_usd": columns.usd("Spend")}
    widgets.table(df, "endpoints", column_config=COLUMNS)

Values stay numbers, so a table sorts by them and its CSV keeps them raw. `readable` (applied by
`widgets.table`) shows a missing value as "—" in any column, never "None": a numeric or time column
that has one is shown as text, right-aligned, in the same format.

Percentages, sizes and durations read as `collectors.formatting` writes them ("3.1 %", "12.4 MB",
"11 min"), which no Streamlit format can (a unit per value, a space before it): such a column carries
its formatter, and `readable` shows the table through a pandas Styler that gives each cell its words
while the cell stays a number."""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from collectors import formatting as fmt

_Column = st.column_config


def text(label: str, help: str | None = None, **kwargs) -> dict:
    return _Column.TextColumn(label, help=help, **kwargs)


def count(label: str, help: str | None = None, **kwargs) -> dict:
    """A whole number with thousands separators: a mean or an estimate is shown rounded."""
    return _Column.NumberColumn(label, help=help, format="localized", step=1, **kwargs)


def ms(label: str, help: str | None = None, decimals: int = 1, **kwargs) -> dict:
    """Milliseconds. Columns of one table share `decimals`, so a max never reads below its p95; whole ones
    (decimals=0) with thousands separators."""
    if decimals == 0:
        return count(label, help, **kwargs)
    return _Column.NumberColumn(label, help=help, format=f"%.{decimals}f", **kwargs)


def usd(label: str, help: str | None = None, decimals: int = 4, **kwargs) -> dict:
    return _Column.NumberColumn(label, help=help, format=f"$%.{decimals}f", **kwargs)


# The key of a column's formatter in its config: `readable` takes it out before Streamlit sees the config.
WORDS = "perfdeck_words"


def _in_words(label: str, help: str | None, words: Callable[[float], str], **kwargs) -> dict:
    return {**_Column.NumberColumn(label, help=help, **kwargs), WORDS: words}


def percent(label: str, help: str | None = None, **kwargs) -> dict:
    """A share of one (0.0306) shown as 3.06 %, like the cards and messages."""
    return _in_words(label, help, fmt.percent, **kwargs)


def percent100(label: str, help: str | None = None, **kwargs) -> dict:
    """A percentage already out of 100 (the advisor's gains) shown as 25 %."""
    return _in_words(label, help, lambda x: fmt.value(x, "percent"), **kwargs)


def duration_ms(label: str, help: str | None = None, **kwargs) -> dict:
    """A length of time in milliseconds that may run to minutes or hours (a statement's total time, a
    request's duration): '165 ms', '4.07 s', '11 min'. Label it without a unit."""
    return _in_words(label, help, fmt.duration_ms, **kwargs)


def ratio(label: str, help: str | None = None, **kwargs) -> dict:
    return _Column.NumberColumn(label, help=help, format="×%.2f", **kwargs)


def decimal(label: str, help: str | None = None, decimals: int = 2, **kwargs) -> dict:
    """A measure with no unit of its own (a rate per second, a fragmentation ratio)."""
    return _Column.NumberColumn(label, help=help, format=f"%.{decimals}f", **kwargs)


def size(label: str, help: str | None = None, **kwargs) -> dict:
    """Bytes, shown as '812 B', '12.4 MB', '271 GB'."""
    return _in_words(label, help, fmt.size, **kwargs)


def when(label: str, help: str | None = None, *, seconds: bool = False, **kwargs) -> dict:
    """A UTC time; label it "(UTC)"."""
    return _Column.DatetimeColumn(label, help=help, format="YYYY-MM-DD HH:mm:ss" if seconds else "YYYY-MM-DD HH:mm",
                                  **kwargs)


# Streamlit's day.js tokens -> strftime, for a time column shown as text
_DATE_TOKENS = (("YYYY", "%Y"), ("MM", "%m"), ("DD", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"))


def _shown(value, type_config: dict, words: Callable | None = None) -> str:
    """One value as its column's format would show it (for a column turned into text)."""
    if fmt.missing(value):
        return fmt.MISSING
    if words:
        return words(value)
    form = type_config.get("format")
    if type_config["type"] == "datetime":
        for token, directive in _DATE_TOKENS:
            form = (form or "YYYY-MM-DD HH:mm:ss").replace(token, directive)
        return pd.Timestamp(value).strftime(form)
    if form == "localized":
        return fmt.count(value) if type_config.get("step") == 1 else f"{value:,}"
    if form and "%" in form:
        return form % value
    return fmt.number(value)


def readable(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame | pd.io.formats.style.Styler, dict]:
    """`df` and its column config as shown: counts rounded, "—" wherever a value is missing, and the
    columns in words (percentages, sizes, durations) through a Styler."""
    out, shown_config = df.copy(), {k: _plain(v) for k, v in config.items()}
    words = {}
    for name in df.columns:
        column = config.get(name)
        column = column if isinstance(column, dict) else _Column.Column(column)   # a label, or nothing
        type_config = column.get("type_config") or {"type": _kind(df[name])}
        if type_config["type"] == "number" and type_config.get("step") == 1:
            out[name] = df[name].round()
        if column.get(WORDS) and not df[name].isna().any():
            words[name] = column[WORDS]
        if not df[name].isna().any():
            continue
        if type_config["type"] in ("number", "datetime"):
            out[name] = [_shown(v, type_config, column.get(WORDS)) for v in out[name]]
            shown_config[name] = {**_plain(column), "alignment": column.get("alignment") or "right",
                                  "type_config": {"type": "text"}}
        elif type_config["type"] == "text":
            out[name] = df[name].astype(object).where(df[name].notna(), fmt.MISSING)
    if not words:
        return out, shown_config
    # A Styler's text shows in a number column that has no format of its own: every other such column
    # gets the house's plain number, which Streamlit's would otherwise be replaced by ("1.500000").
    for name in out.columns:
        column = shown_config.get(name)
        column = column if isinstance(column, dict) else {}
        if (name not in words and pd.api.types.is_numeric_dtype(out[name]) and not pd.api.types.is_bool_dtype(out[name])
                and not (column.get("type_config") or {}).get("format")):
            words[name] = fmt.number
    return out.reset_index(drop=True).style.format(words), shown_config


def _plain(column):
    """A column's config as Streamlit takes it: without its formatter."""
    if not isinstance(column, dict) or WORDS not in column:
        return column
    return {k: v for k, v in column.items() if k != WORDS}


def _kind(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "checkbox"
    if pd.api.types.is_numeric_dtype(values):
        return "number"
    return "datetime" if pd.api.types.is_datetime64_any_dtype(values) else "text"
