"""LLM call pricing: exact Decimal costs against genai-prices, unpriced models, overrides, repricing —
through the real SDK → spool → collector → DuckDB path where the store is involved."""
from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import pandas as pd
import pytest
from click.testing import CliRunner
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice, StartDateConstraint, TieredPrices, TimeOfDateConstraint
from helpers import count, query
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors import sdk
from collectors.cli import main
from collectors.daemon import Collector
from collectors.pricing import COST_COLUMNS, GENAI_PRICES, PRICE_INPUTS, PriceBook, PriceFileError, read_overrides

WHEN = datetime(2026, 11, 1, 12, 0)
# (provider, model, input, cached, cache writes, output): cached and written tokens are parts of input
MIXES = [
    ("openai", "gpt-4o-mini", 1000, 400, 0, 200),
    ("openai", "gpt-4o", 2500, 0, 0, 640),
    ("openai", "gpt-4o", 1800, 1024, 0, 90),
    ("anthropic", "claude-3-5-haiku", 900, 300, 0, 150),
    ("anthropic", "claude-sonnet-4", 5050, 4000, 1000, 300),
    ("anthropic", "claude-sonnet-4", 12, 0, 0, 7),
]


def genai_total(provider, model, inp, cached, written, out, when=WHEN) -> Decimal:
    return calc_price(Usage(input_tokens=inp, cache_read_tokens=cached, cache_write_tokens=written, output_tokens=out),
                      model, provider_id=provider, genai_request_timestamp=when.replace(tzinfo=UTC)).total_price


@pytest.mark.parametrize("provider, model, inp, cached, written, out", MIXES)
def test_cost_is_genai_prices_to_the_last_digit(provider, model, inp, cached, written, out):
    p = PriceBook().price(model=model, provider=provider, ts=WHEN, input_tokens=inp, output_tokens=out,
                          cached_input_tokens=cached, cache_write_tokens=written)
    assert p.cost_usd == genai_total(provider, model, inp, cached, written, out)
    assert p.version == GENAI_PRICES


def test_published_rates_by_hand():
    """gpt-4o-mini: $0.15 input, $0.075 cache read, $0.60 output per million tokens. 600 uncached + 400
    cached input tokens and 200 output: the cached ones are priced once, at the cache-read rate."""
    book = PriceBook()
    p = book.price(model="gpt-4o-mini", provider="openai", ts=WHEN, input_tokens=1000, output_tokens=200,
                   cached_input_tokens=400)
    assert p.input_cost_usd == Decimal("600") * Decimal("0.15") / 10**6 + Decimal("400") * Decimal("0.075") / 10**6
    assert p.output_cost_usd == Decimal("0.00012")
    assert p.cost_usd == Decimal("0.00024")
    assert p.saved_usd == Decimal("400") * (Decimal("0.15") - Decimal("0.075")) / 10**6    # the cache-read discount
    # claude-sonnet-4: $3 input, $0.30 cache read, $3.75 cache write, $15 output per million
    p = book.price(model="claude-sonnet-4", provider="anthropic", ts=WHEN, input_tokens=5050, output_tokens=300,
                   cached_input_tokens=4000, cache_write_tokens=1000)
    assert p.input_cost_usd == Decimal("0.00015") + Decimal("0.0012") + Decimal("0.00375")
    assert p.saved_usd == Decimal("0.0108")


def test_a_call_answered_from_the_app_cache_costs_nothing_and_saves_its_price():
    p = PriceBook().price(model="gpt-4o", provider="openai", ts=WHEN, input_tokens=2500, output_tokens=640,
                          cache_hit=True)
    assert p.cost_usd == 0
    assert p.saved_usd == genai_total("openai", "gpt-4o", 2500, 0, 0, 640)


def test_prices_are_those_in_force_when_the_call_was_made():
    """claude-sonnet-4-6's long-context input price halved on 2026-03-13 in the price list."""
    book = PriceBook()
    kw = dict(model="claude-sonnet-4-6", provider="anthropic", input_tokens=300_000, output_tokens=1000)
    before, after = book.price(ts=datetime(2026, 3, 1), **kw), book.price(ts=datetime(2026, 4, 1), **kw)
    assert before.input_cost_usd == Decimal("1.8") and after.input_cost_usd == Decimal("0.9")


def test_unknown_models_are_unpriced_never_free():
    book = PriceBook()
    assert book.price(model="acme-local-7b", provider=None, ts=WHEN, input_tokens=100, output_tokens=10) is None
    assert book.price(model="acme-local-7b", provider="self-hosted", ts=WHEN, input_tokens=100,
                      output_tokens=10) is None
    # a provider the price list does not know, with a model it does: priced by the model
    p = book.price(model="gpt-4o", provider="corp-gateway", ts=WHEN, input_tokens=2500, output_tokens=640)
    assert p.cost_usd == genai_total("openai", "gpt-4o", 2500, 0, 0, 640)


def write_prices(path, text):
    path.write_text(text)
    return path


def test_override_file_wins_and_prices_unknown_models(tmp_path):
    prices = write_prices(tmp_path / "prices.toml", """
        [models."acme-local-7b"]
        input = 0.20
        output = "0.40"

        [models."openai/gpt-4o"]       # a negotiated rate, for this provider only
        input = 2.0
        output = 8.0
        cache_read = 0.5
    """)
    book = PriceBook.load(prices)
    p = book.price(model="ACME-local-7b", provider=None, ts=WHEN, input_tokens=1000, output_tokens=500,
                   cached_input_tokens=100)
    assert p.cost_usd == Decimal("0.0004")        # 1000 x 0.20 (cache_read defaults to input) + 500 x 0.40
    assert p.version.startswith("override acme-local-7b#")
    p = book.price(model="gpt-4o", provider="openai", ts=WHEN, input_tokens=2000, output_tokens=1000,
                   cached_input_tokens=1000)
    assert p.cost_usd == Decimal("0.0105")        # 1000 x 2.0 + 1000 x 0.5 + 1000 x 8.0, per million
    assert p.saved_usd == Decimal("0.0015")
    assert p.version.startswith("override openai/gpt-4o#")
    # the same model from another provider is not overridden
    assert PriceBook.load(prices).price(model="gpt-4o", provider="azure", ts=WHEN, input_tokens=2000,
                                        output_tokens=1000).version == GENAI_PRICES


def test_an_entry_keeps_its_version_while_another_one_changes(tmp_path):
    path = tmp_path / "prices.toml"
    write_prices(path, '[models.a]\ninput = 1\noutput = 2\n[models.b]\ninput = 1\noutput = 2\n')
    first = read_overrides(path)
    write_prices(path, '[models.a]\ninput = 1\noutput = 2\n[models.b]\ninput = 1\noutput = 3\n')
    second = read_overrides(path)
    assert first["a"][1] == second["a"][1]
    assert first["b"][1] != second["b"][1]


@pytest.mark.parametrize("text, message", [
    ("[models.x]\noutput = 1\n", "`input` ($ per million tokens) is required"),
    ("[models.x]\ninput = -1\noutput = 1\n", "must be a finite number >= 0"),
    ("[models.x]\ninput = 'cheap'\noutput = 1\n", "must be a number"),
    ("[models.x]\ninput = 1\noutput = 1\nrate = 3\n", "unknown keys ['rate']"),
    ("[models\ninput = 1", "not valid TOML"),
])
def test_a_bad_override_file_says_where_and_why(tmp_path, text, message):
    with pytest.raises(PriceFileError, match="prices.toml") as err:
        read_overrides(write_prices(tmp_path / "prices.toml", text))
    assert message in str(err.value)


def test_override_file_is_reread_when_it_changes_and_a_broken_edit_keeps_the_last_good_one(tmp_path):
    path = tmp_path / "prices.toml"
    book = PriceBook.load(path)                   # no file yet: genai-prices alone
    kw = dict(model="acme-local-7b", provider=None, ts=WHEN, input_tokens=1000, output_tokens=0)
    assert book.price(**kw) is None
    write_prices(path, '[models."acme-local-7b"]\ninput = 1\noutput = 1\n')
    assert book.refresh() and book.price(**kw).cost_usd == Decimal("0.001")
    write_prices(path, '[models."acme-local-7b"]\ninput = oops\n')
    later = time.time() + 5
    import os
    os.utime(path, (later, later))
    assert not book.refresh()
    assert book.price(**kw).cost_usd == Decimal("0.001")


# -- a batch at once: price_rows / price_frame against calc_price ---------------------------------

def q(x: Decimal) -> Decimal:
    return x.quantize(Decimal("1e-12"), rounding=ROUND_HALF_EVEN)


def expected(row) -> tuple | None:
    """What a call costs by genai_prices.calc_price itself, call by call: (input, output, cost, saved)."""
    ts, provider, model, inp, out, cached, written, hit = row
    cached = max(0, min(cached, inp))
    written = max(0, min(written, inp - cached))
    when = ts if ts.tzinfo else ts.replace(tzinfo=UTC)

    def calc(c):
        usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=c, cache_write_tokens=written)
        try:
            return calc_price(usage, model, provider_id=provider, genai_request_timestamp=when)
        except LookupError:
            if provider is None:
                raise
            return calc_price(usage, model, genai_request_timestamp=when)
    try:
        paid, full = calc(cached), calc(0)
    except (LookupError, ValueError):
        return None
    if hit:
        return Decimal(0), Decimal(0), Decimal(0), q(paid.input_price + paid.output_price)
    i, o = q(paid.input_price), q(paid.output_price)
    return i, o, i + o, q(full.input_price - paid.input_price)


def as_decimals(priced) -> tuple | None:
    if priced[0] is None:
        assert priced == (None,) * 5
        return None
    assert priced[4] is not None
    return tuple(Decimal(x) for x in priced[:4])


def tier_starts(model_info) -> set[int]:
    prices = model_info.prices
    found = set()
    for mp in [prices] if isinstance(prices, ModelPrice) else [c.prices for c in prices]:
        for value in mp.__dict__.values():
            if isinstance(value, TieredPrices):
                found.update(t.start for t in value.tiers)
    return found


def moments(model_info) -> list[datetime]:
    """Times around each of the model's price changes (the midnight of a start date, the ends of an
    off-peak window), to the microsecond, plus two ordinary ones."""
    out = [WHEN, datetime(2025, 1, 1, 3, 15)]
    if not isinstance(model_info.prices, ModelPrice):
        for c in model_info.prices:
            if isinstance(c.constraint, StartDateConstraint):
                midnight = datetime.combine(c.constraint.start_date, datetime.min.time())
                out += [midnight - timedelta(microseconds=1), midnight]
            elif isinstance(c.constraint, TimeOfDateConstraint):
                for t in (c.constraint.start_time, c.constraint.end_time):
                    at = datetime.combine(datetime(2026, 5, 5).date(), t).astimezone(UTC).replace(tzinfo=None)
                    out += [at - timedelta(microseconds=1), at]
    return out


# (input, output, cache read, cache write, app-cache hit); reads and writes are parts of input
TOKEN_MIXES = [(1000, 200, 0, 0, False), (1000, 200, 400, 0, False), (5050, 300, 4000, 1000, False),
               (12, 7, 0, 12, False), (250_000, 1000, 100_000, 20_000, False), (128_001, 5, 3, 1, True),
               (0, 0, 0, 0, False), (3_000_000, 40_000, 1_000_000, 5, False), (900, 10, 2000, 0, False)]


def every_model_rows():
    for provider in get_snapshot().providers:
        for info in provider.models:
            mixes = TOKEN_MIXES + [(s + d, 10, s // 3, s // 5, False) for s in tier_starts(info) for d in (0, 1)]
            for ts in moments(info):
                for inp, out, cached, written, hit in mixes:
                    yield ts, provider.id, info.id, inp, out, cached, written, hit


def test_every_model_in_the_price_list_costs_what_calc_price_says_to_the_last_digit():
    """Every provider's every model in genai-prices' snapshot, priced as a batch, equals calc_price
    call by call: token mixes with cache reads and writes, both sides of each tier threshold, app-cache
    hits, and the microsecond either side of every price change."""
    rows = list(every_model_rows())
    assert len({(r[1], r[2]) for r in rows}) > 2000
    got = PriceBook().price_rows(rows)
    assert len(got) == len(rows)
    wrong = [(row, g) for row, g in zip(rows, got) if as_decimals(g) != expected(row)]
    assert wrong == []
    assert sum(g[0] is not None for g in got) > 0.9 * len(rows)


def test_a_batch_writes_the_same_text_as_price_call_by_call():
    """Not only the same values: the same strings price() gives (what the store has always been sent)."""
    book = PriceBook()
    rows = [(ts, p, m, *mix) for ts in (WHEN, datetime(2026, 3, 1))
            for p, m in [("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-6"), ("deepseek", "deepseek-chat"),
                         (None, "gpt-4o"), ("corp-gateway", "claude-3-5-haiku"), (None, "acme-local-7b"),
                         ("openrouter", "google/gemini-2.5-flash")]
            for mix in TOKEN_MIXES]
    assert book.price_rows(rows) == [book._price_row(r) for r in rows]


MODELS = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-6"), ("anthropic", "claude-sonnet-4"),
          ("google", "gemini-2.5-pro"), ("deepseek", "deepseek-chat"), ("openrouter", "google/gemini-2.5-flash"),
          (None, "gpt-4o-mini"), ("azure-proxy", "gpt-4o")]
calls = st.tuples(
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31)),
    st.sampled_from(MODELS),
    st.integers(0, 2_000_000), st.integers(0, 200_000), st.integers(0, 2_000_000), st.integers(0, 2_000_000),
    st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(calls, min_size=1, max_size=40))
def test_any_token_mix_costs_what_calc_price_says(batch):
    rows = [(ts, p, m, inp, out, cached, written, hit) for ts, (p, m), inp, out, cached, written, hit in batch]
    assert [as_decimals(g) for g in PriceBook().price_rows(rows)] == [expected(r) for r in rows]


OVERRIDES = """
[models."acme-local-7b"]
input = 0.2
output = "0.4000000000000000001"
cache_read = 0.05
cache_write = 0.25

[models."openai/gpt-4o"]
input = 2.0
output = 8.0
"""


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([(None, "acme-local-7b"), ("openai", "gpt-4o"), ("OpenAI", "GPT-4o"),
                                           ("azure", "gpt-4o"), ("self-hosted", "acme-local-7b")]),
                          st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9),
                          st.booleans()), min_size=1, max_size=30))
def test_overrides_in_a_batch_cost_what_price_says(tmp_path_factory, batch):
    path = tmp_path_factory.mktemp("prices") / "prices.toml"
    path.write_text(OVERRIDES)
    book = PriceBook.load(path)
    rows = [(WHEN, p, m, inp, out, cached, written, hit) for (p, m), inp, out, cached, written, hit in batch]
    assert book.price_rows(rows) == [book._price_row(r) for r in rows]


def test_half_a_pico_dollar_rounds_to_even_as_decimal_quantize_does(tmp_path):
    """$0.0000005 per million tokens is half of 10^-12 per token: 1, 3, 5 tokens land on a tie."""
    book = PriceBook.load(write_prices(tmp_path / "prices.toml", '[models.tiny]\ninput = "0.0000005"\noutput = 0\n'))
    rows = [(WHEN, None, "tiny", n, 0, 0, 0, False) for n in (1, 2, 3, 5, 7)]
    got = book.price_rows(rows)
    assert got == [book._price_row(r) for r in rows]
    assert [Decimal(g[0]) * 10**12 for g in got] == [0, 1, 2, 2, 4]


def test_unknown_models_in_a_batch_stay_unpriced_never_zero():
    rows = [(WHEN, None, "acme-local-7b", 100, 10, 0, 0, False), (WHEN, "self-hosted", "acme-local-7b", 100, 10, 0, 0, True),
            (WHEN, "openai", "gpt-4o", 100, 10, 0, 0, False), (WHEN, "nobody", "no-such-model-at-all", 1, 1, 0, 0, False)]
    got = PriceBook().price_rows(rows)
    assert got[0] == got[1] == got[3] == (None,) * 5
    assert got[2][4] == GENAI_PRICES and Decimal(got[2][2]) > 0


def test_odd_values_are_priced_as_price_prices_them(tmp_path):
    """What the fast path cannot vouch for goes through price() call by call, so nothing changes:
    a negative count is unpriced, a missing cache count is 0, an aware time is converted, a cost past
    what DECIMAL(18, 12) holds is unpriced."""
    book = PriceBook.load(write_prices(tmp_path / "prices.toml", "[models.huge]\ninput = 1000000\noutput = 1\n"))
    rows = [(WHEN, "openai", "gpt-4o", -5, 10, 0, 0, False),
            (WHEN, "openai", "gpt-4o", 1000, 10, None, None, False),
            (WHEN, "openai", "gpt-4o", 1000, 10, math.nan, 0, False),
            (datetime(2026, 3, 13, 1, tzinfo=timezone(timedelta(hours=5))), "anthropic", "claude-sonnet-4-6",
             300_000, 1000, 0, 0, False),
            (WHEN, None, None, 1000, 10, 0, 0, False),
            (WHEN, None, "huge", 2_000_000, 0, 0, 0, False),
            (WHEN, None, "huge", 2_000_000, 0, 0, 0, True)]
    got = book.price_rows(rows)
    assert got == [book._price_row(r) for r in rows]
    assert got[0] == got[2] == got[4] == got[5] == got[6] == (None,) * 5
    assert as_decimals(got[1]) == expected((WHEN, "openai", "gpt-4o", 1000, 10, 0, 0, False))
    assert Decimal(got[3][0]) == Decimal("1.8")       # 2026-03-12 20:00 UTC: before the halving


@pytest.mark.parametrize("ts", [
    datetime(2026, 3, 12, 23, 59, 59, 999_999), pd.Timestamp("2026-03-12 23:59:59.999999999"),
    datetime(2026, 3, 13, 4, tzinfo=timezone(timedelta(hours=5))), pd.Timestamp("2026-03-13", tz="America/New_York"),
    datetime(9999, 12, 31, 23), datetime(1, 1, 1), datetime(2026, 5, 5, 16, 29, 59, 999_999)])
def test_any_time_is_priced_in_the_period_price_puts_it_in(ts):
    """Naive times are UTC, aware ones are converted; a Timestamp's nanoseconds do not move a call
    into the next day; years far from now neither overflow nor wrap."""
    book = PriceBook()
    rows = [(ts, p, m, 300_000, 1000, 1000, 0, False) for p, m in [("anthropic", "claude-sonnet-4-6"),
                                                                   ("deepseek", "deepseek-chat"), ("openai", "gpt-4o")]]
    assert book.price_rows(rows) == [book._price_row(r) for r in rows]


def test_price_frame_fills_a_decoded_frame_as_price_rows_does():
    rows = [(pd.Timestamp(WHEN) + pd.Timedelta(seconds=k), p, m, 1000 + 997 * k, 50 + k, 37 * k, 11 * k, k % 7 == 0)
            for k in range(60) for p, m in [("openai", "gpt-4o"), (None, "claude-3-5-haiku"), (None, "acme-7b")]]
    df = pd.DataFrame(rows, columns=list(PRICE_INPUTS))
    df["provider"] = df["provider"].astype("str")       # missing is NaN in a frame, as decode leaves it
    for col in COST_COLUMNS:
        df[col] = pd.Series([None] * len(df), dtype=object)
    book = PriceBook()
    book.price_frame(df)
    want = [book._price_row((ts.to_pydatetime(), p if isinstance(p, str) else None, m, i, o, c, w, h))
            for ts, p, m, i, o, c, w, h in rows]
    got = [tuple(None if isinstance(v, float) else v for v in r)
           for r in df[list(COST_COLUMNS)].itertuples(index=False, name=None)]
    assert got == want
    assert sum(r[0] is None for r in got) == 60


def test_a_batch_sees_an_edited_override_file(tmp_path):
    path = tmp_path / "prices.toml"
    book = PriceBook.load(path)
    row = (WHEN, None, "acme-local-7b", 1000, 0, 0, 0, False)
    assert book.price_rows([row]) == [(None,) * 5]
    write_prices(path, '[models."acme-local-7b"]\ninput = 1\noutput = 1\n')
    assert book.refresh()
    assert Decimal(book.price_rows([row])[0][2]) == Decimal("0.001")
    write_prices(path, '[models."acme-local-7b"]\ninput = 2\noutput = 1\n')
    later = time.time() + 5
    import os
    os.utime(path, (later, later))
    assert book.refresh()
    assert Decimal(book.price_rows([row])[0][2]) == Decimal("0.002")


# -- through the pipeline ------------------------------------------------------------------------

def record(mixes, *, request_id=None, cache_hit=False):
    for provider, model, inp, cached, written, out in mixes:
        sdk.record_llm_call(model, inp, out, provider=provider, cached_input_tokens=cached,
                            cache_write_tokens=written, request_id=request_id, cache_hit=cache_hit)


def ingest(store, spool, prices=None):
    assert sdk.flush(5)
    Collector(store, spool_dir=spool, prices=prices).run_once()


def test_store_totals_are_exact(store, spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    record(MIXES * 50)                                       # 300 calls
    record(MIXES[:2], cache_hit=True)                        # answered from the app's cache
    record([(None, "acme-local-7b", 800, 0, 0, 120)] * 3)    # unknown to the price list
    ingest(store, spool)
    now = datetime.now(UTC)
    paid = sum(genai_total(*m, when=now) for m in MIXES) * 50
    [(spend, saved_hits, n_unpriced, versions)] = query(store, """
        SELECT sum(cost_usd), sum(saved_usd) FILTER (WHERE cache_hit), count(*) FILTER (WHERE cost_usd IS NULL),
               list(DISTINCT price_version ORDER BY price_version)
        FROM llm_calls""")
    assert spend == paid                                     # DECIMAL sums: not one digit off
    assert saved_hits == sum(genai_total(*m, when=now) for m in MIXES[:2])
    assert n_unpriced == 3 and versions == [GENAI_PRICES, None]
    assert count(store, "llm_calls", "cost_usd IS NULL AND price_version IS NULL AND priced_at IS NULL") == 3
    assert count(store, "llm_calls", "cost_usd IS NOT NULL AND priced_at IS NOT NULL") == 302
    assert query(store, "SELECT sum(cache_write_tokens) FROM llm_calls")[0][0] == 1000 * 50


def test_negative_token_counts_are_dropped_and_counted(store, spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    sdk.record_llm_call("gpt-4o", -5, 10, provider="openai")
    sdk.record_llm_call("gpt-4o", 5, 10, provider="openai")
    ingest(store, spool)
    assert count(store, "llm_calls") == 1
    # The SDK leaves it out of the batch and says so; the collector stores what it said.
    assert query(store, "SELECT rejected, rejected_reasons->>'llm:bad_input_tokens' FROM sdk_health") == [(1, "1")]


def test_reprice_prices_what_was_unpriced_and_leaves_the_rest(store, spool, tmp_path, monkeypatch):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    record([(None, "acme-local-7b", 1000, 0, 0, 500)] * 4 + MIXES)
    ingest(store, spool)
    before = query(store, "SELECT rowid, cost_usd, price_version, priced_at FROM llm_calls WHERE model <> 'acme-local-7b'")

    prices = write_prices(tmp_path / "prices.toml", '[models."acme-local-7b"]\ninput = 0.20\noutput = 0.40\n')
    monkeypatch.setenv("PERFDECK_PRICES_FILE", str(prices))
    runner = CliRunner()
    preview = runner.invoke(main, ["reprice", "--db", str(store), "--since", "1h"], input="n\n")
    assert preview.exit_code == 1 and "4 change" in preview.output and "unpriced 4 -> 0" in preview.output
    assert count(store, "llm_calls", "cost_usd IS NULL") == 4      # declined: nothing written
    assert count(store, "action_audit") == 0

    done = runner.invoke(main, ["reprice", "--db", str(store), "--since", "1h", "--yes"])
    assert done.exit_code == 0, done.output
    assert "repriced:" in done.output
    assert query(store, "SELECT count(*), sum(cost_usd), any_value(price_version) FROM llm_calls "
                        "WHERE model = 'acme-local-7b'") == [(4, Decimal("0.0016"), read_overrides(prices)
                                                              ["acme-local-7b"][1])]
    assert query(store, "SELECT rowid, cost_usd, price_version, priced_at FROM llm_calls "
                        "WHERE model <> 'acme-local-7b'") == before     # unchanged, not even re-stamped
    [(actor, action, outcome, figures)] = query(store, "SELECT actor, action, outcome, figures FROM action_audit")
    assert actor.startswith("cli:") and (action, outcome) == ("reprice", "ok") and '"unpriced_after": 0' in figures

    again = runner.invoke(main, ["reprice", "--db", str(store), "--since", "1h", "--yes"])
    assert again.exit_code == 0 and "nothing to change" in again.output


def test_reprice_of_a_range_and_model_only(store, tmp_path, monkeypatch, migrated_store):
    """Calls outside --since/--until or of another model are not touched."""
    from collectors.store import utcnow, write
    now = utcnow()
    with write(store) as con:
        con.executemany("""INSERT INTO llm_calls (ts, service, provider, model, input_tokens, output_tokens,
                           cached_input_tokens, cache_hit) VALUES (?, 'api', NULL, ?, 1000, 0, 0, false)""",
                        [(now - timedelta(hours=h), m) for h in (1, 5, 30) for m in ("acme-local-7b", "other-7b")])
    prices = write_prices(tmp_path / "prices.toml",
                          '[models."acme-local-7b"]\ninput = 1\noutput = 1\n[models."other-7b"]\ninput = 1\noutput = 1\n')
    monkeypatch.setenv("PERFDECK_PRICES_FILE", str(prices))
    r = CliRunner().invoke(main, ["reprice", "--db", str(store), "--since", "10h", "--until", "2h",
                                  "--model", "acme-local-7b", "--yes"])
    assert r.exit_code == 0, r.output
    assert query(store, "SELECT model, ts FROM llm_calls WHERE cost_usd IS NOT NULL") == [
        ("acme-local-7b", now - timedelta(hours=5))]


def test_reprice_with_a_broken_prices_file_is_a_clear_error(store, tmp_path, monkeypatch, migrated_store):
    monkeypatch.setenv("PERFDECK_PRICES_FILE", str(write_prices(tmp_path / "prices.toml", "[models.x]\noutput = 1\n")))
    r = CliRunner().invoke(main, ["reprice", "--db", str(store), "--yes"])
    assert r.exit_code == 1 and "prices.toml" in r.output and "`input`" in r.output


def test_export_cost_by_model_and_day(store, spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    record(MIXES * 2 + [(None, "acme-local-7b", 800, 0, 0, 120)], request_id="r-1")
    ingest(store, spool)
    runner = CliRunner()
    r = runner.invoke(main, ["export", "cost", "--db", str(store), "--by", "model", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = {row["model"]: row for row in json.loads(r.output)}
    now = datetime.now(UTC)
    assert rows["gpt-4o"]["calls"] == 4
    assert rows["gpt-4o"]["spend_usd"] == pytest.approx(float(2 * sum(genai_total(*m, when=now)
                                                                     for m in MIXES if m[1] == "gpt-4o")))
    assert (rows["acme-local-7b"]["unpriced_calls"], rows["acme-local-7b"]["spend_usd"]) == (1, 0)
    r = runner.invoke(main, ["export", "cost", "--db", str(store), "--by", "day", "--since", "7d"])
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith("day,calls,")
    assert len(r.output.splitlines()) == 2
    assert runner.invoke(main, ["export", "cost", "--db", str(store), "--by", "team"]).exit_code == 2
