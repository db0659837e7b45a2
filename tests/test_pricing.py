"""LLM call pricing: exact Decimal costs against genai-prices, unpriced models, overrides, repricing —
through the real SDK → spool → collector → DuckDB path where the store is involved."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner
from genai_prices import Usage, calc_price
from helpers import count, query

from collectors import sdk
from collectors.cli import main
from collectors.daemon import Collector
from collectors.pricing import GENAI_PRICES, PriceBook, PriceFileError, read_overrides

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
