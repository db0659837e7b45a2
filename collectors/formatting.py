"""Numbers as a person reads them, one way everywhere: the pages, health and alert messages, the
command line's reports.

    ms(1234.5)         -> "1.23 s"         duration(490)   -> "8.2 min"     count(9333.7) -> "9,334"
    duration_ms(661927) -> "11 min"
    money(0.00141)     -> "$0.00141"       percent(0.625)  -> "62.5 %"      ratio(4.94)   -> "×4.94"
    value(0.62, "ratio") -> "62 %"         ms(None)        -> "—"

A missing value reads MISSING ("—"), never "None" or "nan". These make text; data stays raw where it is
data (CSV downloads, JSON reports, the store). Tables on the pages keep numbers sortable and declare
their format per column (`dashboard.columns`), in the same units as here."""
from __future__ import annotations

import math

MISSING = "—"


def missing(x) -> bool:
    """None, NaN, NaT or pandas' NA: a value that is not there."""
    if x is None:
        return True
    try:
        return bool(x != x)       # NaN and NaT are not equal to themselves
    except TypeError:             # pandas.NA refuses bool()
        return True


def number(x) -> str:
    """About three significant digits, thousands separated: 740, 1,240, 62.5, 2.25, 0.0042."""
    if missing(x):
        return MISSING
    v = float(x) if abs(float(x)) >= 5e-7 else 0.0
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 0.01 or v == 0:
        text = f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    else:   # three significant digits, down to a millionth
        text = f"{v:.{min(6, 2 - math.floor(math.log10(abs(v))))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def count(x) -> str:
    """A whole number: 9,334 (a mean or an estimate rounded)."""
    return MISSING if missing(x) else f"{round(float(x)):,}"


def ms(x) -> str:
    """A latency: '0.8 ms', '74.2 ms', '447 ms', '1.73 s'."""
    if missing(x):
        return MISSING
    v = float(x)
    if v >= 1000:
        return f"{v / 1000:,.2f} s"
    if abs(v) < 0.1:      # '0.02 ms', not '0.0 ms'
        return f"{number(v)} ms"
    return f"{v:,.1f} ms" if v < 100 else f"{v:,.0f} ms"


def duration(seconds, *, whole: bool = False) -> str:
    """How long: 0.42 -> '420 ms', 45 -> '45 s', 490 -> '8.2 min', 1200 -> '20 min', 9000 -> '2.5 h', 302400
    -> '3.5 d'. Under two minutes in seconds (whole ones when `whole`: how long ago, '58 s' not '58.4 s')."""
    if missing(seconds):
        return MISSING
    s = float(seconds)
    if abs(s) < 1 and not whole and s:
        return ms(s * 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(s) >= 2 * size:
            n = s / size
            return f"{n:,.0f} {unit}" if abs(n) >= 10 else f"{n:.1f}".removesuffix(".0") + f" {unit}"
    return f"{s:.0f} s" if whole else f"{number(s)} s"


def duration_ms(x) -> str:
    """How long, from milliseconds, for a time that may run to hours (a statement's total time):
    661927 -> '11 min', 4073 -> '4.07 s', 165 -> '165 ms'."""
    return MISSING if missing(x) else duration(float(x) / 1000)


def money(x) -> str:
    """US dollars: cents from a dollar up ('$1,234.50', '$0.50'), three significant digits below
    ('$0.0118', '$0.00141'), so a small cost never reads as $0.00."""
    if missing(x):
        return MISSING
    v = float(x) if abs(float(x)) >= 5e-9 else 0.0
    if abs(v) >= 1 or v == 0:
        return f"${v:,.2f}"
    text = f"{abs(v):.{min(8, 2 - math.floor(math.log10(abs(v))))}f}"    # down to a millionth of a cent
    text = text[:4] + text[4:].rstrip("0")          # "0.120" -> "0.12", never fewer than two decimals
    return f"${text}" if v > 0 else f"-${text}"


def size(n_bytes) -> str:
    """Bytes in powers of 1,000, like the tables' "bytes" columns: '812 B', '1.2 MB', '3.4 GB'."""
    if missing(n_bytes):
        return MISSING
    v = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(v) < 1000 or unit == "TB":
            return f"{number(v)} {unit}"
        v /= 1000


def percent(share) -> str:
    """A share of one as a percentage: 0.625 -> '62.5 %', 0.0067 -> '0.67 %'."""
    return MISSING if missing(share) else f"{number(float(share) * 100)} %"


def ratio(x) -> str:
    """A factor: '×0.91', '×4.94', '×24.9'."""
    if missing(x):
        return MISSING
    return f"×{float(x):,.1f}" if float(x) >= 10 else f"×{float(x):.2f}"


def ratio_range(low, high) -> str:
    """An interval of factors: '×10.9–×14.0', MISSING without one."""
    return MISSING if missing(low) or missing(high) else f"{ratio(low)}–{ratio(high)}"


def p_value(p) -> str:
    """'p < 0.001', 'p = 0.042', 'p —'."""
    if missing(p):
        return f"p {MISSING}"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def value(x, unit: str) -> str:
    """A value in a threshold's unit, as messages show it: "740 ms", "62 %" (a ratio), "$0.12", "12,000
    entries", "8.2 min" (s and age, past two minutes), "1,200" (a count), "up"/"down"."""
    if missing(x):
        return MISSING
    x = float(x)
    if unit == "ratio":
        return percent(x)
    if unit == "percent":
        return f"{number(x)} %"
    if unit == "usd":
        return money(x)
    if unit == "entries":
        return f"{count(x)} entries"
    if unit == "up":
        return "up" if x >= 1 else "down"
    if unit == "count":
        return count(x)
    if unit in ("s", "age"):
        return duration(x, whole=unit == "age")
    return f"{number(x)} {unit}"
