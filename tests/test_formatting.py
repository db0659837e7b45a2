"""Readable numbers: the formatting module's words, and tables that show "—" for a missing value
while their numbers stay numbers."""
from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors import formatting as fmt
from dashboard import columns

MISSING_VALUES = [None, float("nan"), np.nan, pd.NA, pd.NaT]


@pytest.mark.parametrize(("fn", "value", "text"), [
    (fmt.number, 740, "740"), (fmt.number, 1240.4, "1,240"), (fmt.number, 62.5, "62.5"), (fmt.number, 2.25, "2.25"),
    (fmt.number, 0.0042, "0.0042"), (fmt.number, 0, "0"),
    (fmt.count, 9333.737, "9,334"), (fmt.count, 11287.354, "11,287"),
    (fmt.ms, 0.8, "0.8 ms"), (fmt.ms, 74.24, "74.2 ms"), (fmt.ms, 447.2, "447 ms"), (fmt.ms, 1734, "1.73 s"),
    (fmt.ms, 493027.826, "493.03 s"),
    (fmt.duration, 45, "45 s"), (fmt.duration, 490, "8.2 min"), (fmt.duration, 9000, "2.5 h"),
    (fmt.duration, 302400, "3.5 d"),
    (fmt.money, 1234.5, "$1,234.50"), (fmt.money, 0.5, "$0.50"), (fmt.money, 0.12345, "$0.123"),
    (fmt.money, 0.0118, "$0.0118"), (fmt.money, 0.001400, "$0.0014"), (fmt.money, 0, "$0.00"),
    (fmt.money, -0.05, "-$0.05"),
    (fmt.percent, 0.625, "62.5 %"), (fmt.percent, 0.0067, "0.67 %"),
    (fmt.ratio, 4.944, "×4.94"), (fmt.ratio, 24.93, "×24.9"),
    (fmt.size, 812, "812 B"), (fmt.size, 1_234_567, "1.23 MB"),
])
def test_words_for_numbers(fn, value, text):
    assert fn(value) == text


@pytest.mark.parametrize("fn", [fmt.number, fmt.count, fmt.ms, fmt.duration, fmt.money, fmt.percent, fmt.ratio,
                                fmt.size])
@pytest.mark.parametrize("value", MISSING_VALUES, ids=repr)
def test_a_missing_value_reads_as_a_dash(fn, value):
    assert fn(value) == fmt.MISSING


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)


@given(finite)
def test_every_formatter_gives_short_text_without_nan_none_or_exponent(x):
    for fn in (fmt.number, fmt.count, fmt.ms, fmt.duration, fmt.money, fmt.percent, fmt.ratio, fmt.size):
        text = fn(x)
        assert text and len(text) < 32, (fn.__name__, x, text)
        assert not any(bad in text.lower() for bad in ("nan", "none", "e+", "e-")), (fn.__name__, x, text)
        assert text not in ("-0", "-$0.00") and not text.startswith("-0 "), (fn.__name__, x, text)


@given(st.floats(min_value=1e-6, max_value=1e9), st.floats(min_value=1e-6, max_value=1e9))
def test_money_never_rounds_a_cost_to_zero_and_keeps_order(a, b):
    low, high = sorted((a, b))
    assert fmt.money(low) != "$0.00"
    # Three significant digits: the text read back is within 0.5 % (or a cent) of the value.
    back = float(fmt.money(high).lstrip("$").replace(",", ""))
    assert math.isclose(back, high, rel_tol=5e-3, abs_tol=0.005)


def test_a_table_shows_missing_values_as_a_dash_and_keeps_full_columns_numeric():
    df = pd.DataFrame({
        "provider": [None, "openai"], "spend_usd": [np.nan, 0.0014], "calls_day": [11287.354, 3.2],
        "p95_ms": [12.5, 30.25], "at": [pd.NaT, datetime(2026, 12, 3, 10, 0, 5)], "plain": [1.5, np.nan],
    })
    config = {"provider": columns.text("Provider"), "spend_usd": columns.usd("Spend"),
              "calls_day": columns.count("Calls / day"), "p95_ms": columns.ms("p95 (ms)"),
              "at": columns.when("When (UTC)", seconds=True)}
    shown, shown_config = columns.readable(df, config)
    assert shown["provider"].tolist() == ["—", "openai"]
    assert shown["spend_usd"].tolist() == ["—", "$0.0014"]                # had a missing value: text, right-aligned
    assert shown_config["spend_usd"]["type_config"] == {"type": "text"}
    assert (shown_config["spend_usd"]["label"], shown_config["spend_usd"]["alignment"]) == ("Spend", "right")
    assert shown["at"].tolist() == ["—", "2026-12-03 10:00:05"]
    assert shown["plain"].tolist() == ["1.5", "—"]                          # no config: still a dash
    assert shown["calls_day"].tolist() == [11287.0, 3.0]                    # a count: whole, still a number
    assert shown["p95_ms"].tolist() == [12.5, 30.25] and shown_config["p95_ms"] is config["p95_ms"]
    assert df["spend_usd"].isna().sum() == 1 and df["calls_day"].iloc[0] == 11287.354   # the frame (and CSV) untouched


def displayed(styler) -> pd.DataFrame:
    """What a table's cells show, as Streamlit reads them off a Styler (its display values)."""
    styler._compute()
    body = styler._translate(False, False)["body"]
    return pd.DataFrame([[cell["display_value"] for cell in row if cell.get("type") == "td"] for row in body],
                        columns=styler.data.columns)


def test_percentages_sizes_and_durations_read_as_words_and_stay_numbers():
    """Seen in the tour: "3.06%" in a table beside "0.16 %" on a card, "12.4MB" beside "26 GB", and a statement's
    total time as 661,927 ms. Each column reads as collectors.formatting writes it; the CSV keeps the numbers."""
    df = pd.DataFrame({"error_rate": [0.0306, 0.6202, 0.0], "gain": [97.0, 62.02, 5.0],
                       "size": [12_400_000, 26e9, 270.6e9], "total_ms": [661_927.0, 4_073.0, 0.02],
                       "calls": [10871.0, 3.0, 1.0], "plain": [1.5, 2.25, 0.0042], "name": ["a", "b", "c"]})
    config = {"error_rate": columns.percent("Error rate"), "gain": columns.percent100("Gain"),
              "size": columns.size("Size"), "total_ms": columns.duration_ms("Total time"),
              "calls": columns.count("Calls"), "name": columns.text("Name")}
    shown, shown_config = columns.readable(df, config)
    cells = displayed(shown)
    assert cells["error_rate"].tolist() == ["3.06 %", "62 %", "0 %"]
    assert cells["gain"].tolist() == ["97 %", "62 %", "5 %"]
    assert cells["size"].tolist() == ["12.4 MB", "26 GB", "271 GB"]
    assert cells["total_ms"].tolist() == ["11 min", "4.07 s", "0.02 ms"]
    assert cells["plain"].tolist() == ["1.5", "2.25", "0.0042"]          # no format of its own: the house's number
    assert shown.data["total_ms"].tolist() == df["total_ms"].tolist()    # still numbers: they sort as numbers
    for name in ("error_rate", "gain", "size", "total_ms"):             # no format: the Styler's words show
        assert shown_config[name]["type_config"]["type"] == "number" and not shown_config[name]["type_config"]["format"]
        assert columns.WORDS not in shown_config[name]
    json.dumps(shown_config)                                             # nothing Streamlit cannot send


def test_a_missing_percentage_reads_as_a_dash_beside_words():
    df = pd.DataFrame({"hit_rate": [0.481, None], "spend_usd": [0.5, 0.25]})
    shown, shown_config = columns.readable(df, {"hit_rate": columns.percent("Hit rate"),
                                                "spend_usd": columns.usd("Spend")})
    assert isinstance(shown, pd.DataFrame) and shown["hit_rate"].tolist() == ["48.1 %", "—"]
    assert shown_config["hit_rate"]["type_config"] == {"type": "text"} and columns.WORDS not in shown_config["hit_rate"]
