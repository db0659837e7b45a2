"""Table columns by kind of value: one display format per kind, in the units `collectors.formatting`
writes, for every page's tables.

    COLUMNS = {"endpoint": columns.text("Endpoint"), "requests": columns.count("Requests"),
               "p95_ms": columns.ms("p95 (ms)"), "spend_usd": columns.usd("Spend")}
    widgets.table(df, "endpoints", column_config=COLUMNS)

Values stay numbers, so a table sorts by them and its CSV keeps them raw. `readable` (applied by
`widgets.table`) shows a missing value as "—" in any column, never "None": a numeric or time column
that has one is shown as text, right-aligned, in the same format."""
from __future__ import annotations

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


def percent(label: str, help: str | None = None, **kwargs) -> dict:
    """A share of one (0.25) shown as 25.00%."""
    return _Column.NumberColumn(label, help=help, format="percent", **kwargs)


def percent100(label: str, help: str | None = None, **kwargs) -> dict:
    """A percentage already out of 100 (the advisor's gains, CPU %) shown as 25 %."""
    return _Column.NumberColumn(label, help=help, format="%.0f %%", **kwargs)


def ratio(label: str, help: str | None = None, **kwargs) -> dict:
    return _Column.NumberColumn(label, help=help, format="×%.2f", **kwargs)


def decimal(label: str, help: str | None = None, decimals: int = 2, **kwargs) -> dict:
    """A measure with no unit of its own (a rate per second, a fragmentation ratio)."""
    return _Column.NumberColumn(label, help=help, format=f"%.{decimals}f", **kwargs)


def size(label: str, help: str | None = None, **kwargs) -> dict:
    """Bytes, shown as KB / MB / GB."""
    return _Column.NumberColumn(label, help=help, format="bytes", **kwargs)


def when(label: str, help: str | None = None, *, seconds: bool = False, **kwargs) -> dict:
    """A UTC time; label it "(UTC)"."""
    return _Column.DatetimeColumn(label, help=help, format="YYYY-MM-DD HH:mm:ss" if seconds else "YYYY-MM-DD HH:mm",
                                  **kwargs)


# Streamlit's day.js tokens -> strftime, for a time column shown as text
_DATE_TOKENS = (("YYYY", "%Y"), ("MM", "%m"), ("DD", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"))


def _shown(value, type_config: dict) -> str:
    """One value as its column's format would show it (for a column turned into text)."""
    if fmt.missing(value):
        return fmt.MISSING
    form = type_config.get("format")
    if type_config["type"] == "datetime":
        for token, directive in _DATE_TOKENS:
            form = (form or "YYYY-MM-DD HH:mm:ss").replace(token, directive)
        return pd.Timestamp(value).strftime(form)
    if form == "localized":
        return fmt.count(value) if type_config.get("step") == 1 else f"{value:,}"
    if form == "percent":
        return fmt.percent(value)
    if form == "bytes":
        return fmt.size(value)
    if form and "%" in form:
        return form % value
    return fmt.number(value)


def readable(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    """`df` and its column config as shown: counts rounded, and "—" wherever a value is missing."""
    out, shown_config = df.copy(), dict(config)
    for name in df.columns:
        column = config.get(name)
        column = column if isinstance(column, dict) else _Column.Column(column)   # a label, or nothing
        type_config = column.get("type_config") or {"type": _kind(df[name])}
        if type_config["type"] == "number" and type_config.get("step") == 1:
            out[name] = df[name].round()
        if not df[name].isna().any():
            continue
        if type_config["type"] in ("number", "datetime"):
            out[name] = [_shown(v, type_config) for v in out[name]]
            shown_config[name] = {**column, "alignment": column.get("alignment") or "right",
                                  "type_config": {"type": "text"}}
        elif type_config["type"] == "text":
            out[name] = df[name].astype(object).where(df[name].notna(), fmt.MISSING)
    return out, shown_config


def _kind(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "checkbox"
    if pd.api.types.is_numeric_dtype(values):
        return "number"
    return "datetime" if pd.api.types.is_datetime64_any_dtype(values) else "text"
