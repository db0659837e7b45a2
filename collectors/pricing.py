"""What an LLM call cost: prices from genai-prices (an offline snapshot with time-effective and
cache-read prices), overridden per model by a TOML file for self-hosted, negotiated or unknown models.

    book = PriceBook.load("prices.toml")           # a missing file means no overrides
    price = book.price(model="gpt-4o", provider="openai", ts=ts, input_tokens=1200,
                       output_tokens=300, cached_input_tokens=800)
    price.cost_usd, price.saved_usd, price.version  # Decimal, Decimal, "genai-prices 0.2.3"

The override file, $ per million tokens (a key is the model as recorded, or "provider/model"):

    [models."acme-local-7b"]
    input = 0.20
    output = 0.40
    cache_read = 0.05        # optional, defaults to input
    cache_write = 0.25       # optional, defaults to input

Token semantics follow genai-prices: `input_tokens` is the whole prompt; `cached_input_tokens` (read
from the provider's prompt cache) and `cache_write_tokens` are parts of it, priced at their own rates,
never twice. A call answered from the app's own result cache (`cache_hit`) cost nothing: its price is
what it saved. An unknown model is never priced at zero: `price()` returns None and the row stays
unpriced (cost NULL) until an override prices it and `perfdeck reprice` recomputes it."""
from __future__ import annotations

import hashlib
import logging
import os
import tomllib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import genai_prices
from genai_prices import Usage, calc_price

from collectors.store.ingest import COST_COLUMNS

log = logging.getLogger("perfdeck.pricing")

GENAI_PRICES = f"genai-prices {genai_prices.__version__}"
SCALE = Decimal("1e-12")            # the store's DECIMAL(18, 12)
MAX_COST_USD = Decimal(10**6)       # DECIMAL(18, 12) holds six digits before the point
MTOK = Decimal(1_000_000)
# What a call's price depends on: the llm_calls columns price_rows() takes, in this order.
PRICE_INPUTS = ("ts", "provider", "model", "input_tokens", "output_tokens", "cached_input_tokens",
                "cache_write_tokens", "cache_hit")


@dataclass(frozen=True)
class CallPrice:
    input_cost_usd: Decimal       # what was paid (zero for a call answered from the app's cache)
    output_cost_usd: Decimal
    saved_usd: Decimal            # what caching saved: the whole call on a cache hit, else the cache-read discount
    version: str                  # the price list used, stored on the row

    @property
    def cost_usd(self) -> Decimal:
        return self.input_cost_usd + self.output_cost_usd


@dataclass(frozen=True)
class Rates:
    """An override's $ per million tokens."""
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal

    def cost(self, input_tokens: int, output_tokens: int, cached: int, written: int) -> tuple[Decimal, Decimal]:
        uncached = input_tokens - cached - written
        return ((uncached * self.input + cached * self.cache_read + written * self.cache_write) / MTOK,
                output_tokens * self.output / MTOK)


class PriceFileError(ValueError):
    """The override file cannot be used; the message says where and why."""


def _rate(entry: dict, key: str, default: Decimal | None, where: str) -> Decimal:
    value = entry.get(key)
    if value is None:
        if default is None:
            raise PriceFileError(f"{where}: `{key}` ($ per million tokens) is required")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PriceFileError(f"{where}: `{key}` must be a number, got {value!r}")
    try:
        rate = Decimal(str(value))
    except ArithmeticError:
        raise PriceFileError(f"{where}: `{key}` must be a number, got {value!r}") from None
    if not rate.is_finite() or rate < 0:
        raise PriceFileError(f"{where}: `{key}` must be a finite number >= 0, got {value!r}")
    return rate


def read_overrides(path: str | os.PathLike) -> dict[str, tuple[Rates, str]]:
    """model key (lower case) -> (rates, version) from an override file. The version names the entry
    and a hash of its rates, so editing one model's price never re-labels another's."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise PriceFileError(f"{path}: not valid TOML ({exc})") from None
    models = doc.get("models", {})
    if not isinstance(models, dict):
        raise PriceFileError(f"{path}: [models] must be a table of models")
    out = {}
    for key, entry in models.items():
        where = f'{path.name} [models."{key}"]'
        if not isinstance(entry, dict):
            raise PriceFileError(f"{where}: expected a table with input and output rates")
        unknown = set(entry) - {"input", "output", "cache_read", "cache_write"}
        if unknown:
            raise PriceFileError(f"{where}: unknown keys {sorted(unknown)}")
        inp = _rate(entry, "input", None, where)
        rates = Rates(inp, _rate(entry, "output", None, where), _rate(entry, "cache_read", inp, where),
                      _rate(entry, "cache_write", inp, where))
        digest = hashlib.sha256(repr((rates.input, rates.output, rates.cache_read, rates.cache_write))
                                .encode()).hexdigest()[:8]
        out[key.strip().lower()] = (rates, f"override {key.strip()}#{digest}")
    return out


class PriceBook:
    """Prices calls: an override for the model if there is one, else genai-prices at the call's time."""

    def __init__(self, overrides: dict[str, tuple[Rates, str]] | None = None, path: Path | None = None):
        self.overrides = overrides or {}
        self.path = path
        self._mtime = self._stat()

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> PriceBook:
        """The book for an override file; a missing (or unset) file means genai-prices alone."""
        path = Path(path) if path else None
        return cls(read_overrides(path) if path and path.exists() else {}, path)

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime if self.path else None
        except OSError:
            return None

    def refresh(self) -> bool:
        """Re-read the override file if it changed since it was read; True when it was. A broken file
        keeps the previous overrides (logged), so a typo never stops ingest."""
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            self.overrides = read_overrides(self.path) if mtime is not None else {}
        except PriceFileError as exc:
            log.error("price overrides not reloaded: %s", exc)
            return False
        log.info("price overrides reloaded from %s: %d models", self.path, len(self.overrides))
        return True

    def _override(self, provider: str | None, model: str) -> tuple[Rates, str] | None:
        model = model.strip().lower()
        if provider:
            found = self.overrides.get(f"{provider.strip().lower()}/{model}")
            if found:
                return found
        return self.overrides.get(model)

    def price(self, *, model: str, provider: str | None, ts: datetime, input_tokens: int, output_tokens: int,
              cached_input_tokens: int = 0, cache_write_tokens: int = 0, cache_hit: bool = False) -> CallPrice | None:
        """The call's price, or None when no price list knows the model."""
        cached = max(0, min(int(cached_input_tokens or 0), input_tokens))
        written = max(0, min(int(cache_write_tokens or 0), input_tokens - cached))
        override = self._override(provider, model)
        if override:
            rates, version = override
            inp, out = rates.cost(input_tokens, output_tokens, cached, written)
            uncached_inp, _ = rates.cost(input_tokens, output_tokens, 0, written)
        else:
            try:
                paid = self._genai(model, provider, ts, input_tokens, output_tokens, cached, written)
                full = (self._genai(model, provider, ts, input_tokens, output_tokens, 0, written)
                        if cached else paid)
            except LookupError:
                return None
            inp, out, uncached_inp, version = paid.input_price, paid.output_price, full.input_price, GENAI_PRICES
        if cache_hit:      # answered from the app's own cache: nothing paid, the whole call saved
            zero = Decimal(0)
            return CallPrice(zero, zero, _q(inp + out), version)
        return CallPrice(_q(inp), _q(out), _q(uncached_inp - inp), version)

    @staticmethod
    def _genai(model, provider, ts, input_tokens, output_tokens, cached, written):
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached,
                      cache_write_tokens=written)
        when = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        try:
            return calc_price(usage, model, provider_id=provider, genai_request_timestamp=when)
        except LookupError:
            if provider is None:
                raise
            # A provider genai-prices does not know ("azure-proxy", "self-hosted"): try the model alone.
            return calc_price(usage, model, genai_request_timestamp=when)

    def price_frame(self, df) -> None:
        """Fill the COST_COLUMNS of a decoded batch's `llm` frame in place."""
        if df is None:
            return
        self.refresh()
        priced = self.price_rows(df[list(PRICE_INPUTS)].itertuples(index=False, name=None))
        for i, col in enumerate(COST_COLUMNS):
            df[col] = [row[i] for row in priced]

    def price_rows(self, rows) -> list[tuple]:
        """COST_COLUMNS values (costs as strings, exact) for each row of PRICE_INPUTS; None for unpriced rows."""
        out = []
        for ts, provider, model, inp, outp, cached, written, hit in rows:
            provider = provider if isinstance(provider, str) else None     # a frame's missing value is NaN
            try:
                p = self.price(model=model, provider=provider, ts=ts, input_tokens=int(inp), output_tokens=int(outp),
                               cached_input_tokens=int(cached or 0), cache_write_tokens=int(written or 0),
                               cache_hit=bool(hit))
            except Exception:
                log.warning("could not price a %s call; left unpriced", model, exc_info=True)
                p = None
            if p is not None and max(abs(p.cost_usd), abs(p.saved_usd), abs(p.input_cost_usd)) >= MAX_COST_USD:
                log.warning("a %s call priced at $%s is past what the store holds; left unpriced", model, p.cost_usd)
                p = None
            out.append((None,) * 5 if p is None else
                       (str(p.input_cost_usd), str(p.output_cost_usd), str(p.cost_usd), str(p.saved_usd), p.version))
        return out


def _q(x: Decimal) -> Decimal:
    return Decimal(x).quantize(SCALE, rounding=ROUND_HALF_EVEN)


# -- repricing a range on purpose ------------------------------------------------------------------
_RANGE_SQL = """
    SELECT rowid AS row_id, ts, provider, model, input_tokens, output_tokens, cached_input_tokens,
           cache_write_tokens, cache_hit, cost_usd::VARCHAR AS old_cost, price_version AS old_version
    FROM llm_calls
    WHERE ts >= ? AND ts < ? AND (? IS NULL OR lower(model) = lower(?))
    ORDER BY ts
"""


@dataclass
class Repricing:
    """What `perfdeck reprice` would change (or changed) in a range."""
    rows: object                    # DataFrame: row_id + the new COST_COLUMNS of the calls that change
    calls: int
    changed: int                    # calls whose cost or price version differs
    spend_before: Decimal
    spend_after: Decimal
    unpriced_before: int
    unpriced_after: int
    versions_after: dict[str, int]  # price version -> calls ("unpriced" for None)

    def summary(self) -> str:
        return (f"{self.calls:,} calls, {self.changed:,} change: spend ${self.spend_before:,.6f} -> "
                f"${self.spend_after:,.6f}; unpriced {self.unpriced_before:,} -> {self.unpriced_after:,}; "
                f"prices now: " + ", ".join(f"{v} ({n:,})" for v, n in sorted(self.versions_after.items())))


def plan_reprice(con, book: PriceBook, *, since: datetime, until: datetime, model: str | None = None) -> Repricing:
    """Price every call in [since, until) again with `book`, without writing anything."""
    df = con.execute(_RANGE_SQL, [since, until, model, model]).df()
    book.price_frame(df)
    new = list(df[list(COST_COLUMNS)].itertuples(index=False, name=None))

    def cost(text):
        return Decimal(text) if isinstance(text, str) else None

    changed = [cost(o) != cost(n[2]) or (ov if isinstance(ov, str) else None) != n[4]
               for o, ov, n in zip(df["old_cost"], df["old_version"], new)]
    versions = dict(Counter(n[4] or "unpriced" for n in new))
    return Repricing(df.loc[changed, ["row_id", *COST_COLUMNS]], len(df), sum(changed),
                     sum((cost(o) for o in df["old_cost"] if cost(o) is not None), Decimal(0)),
                     sum((cost(n[2]) for n in new if n[2] is not None), Decimal(0)),
                     sum(1 for o in df["old_cost"] if cost(o) is None), sum(1 for n in new if n[2] is None), versions)


def apply_reprice(con, plan: Repricing) -> int:
    """Write a plan's costs within the caller's transaction; returns the rows updated."""
    if not plan.changed:
        return 0
    con.register("_repriced", plan.rows)
    try:
        con.execute("""
            UPDATE llm_calls SET input_cost_usd = r.input_cost_usd::DECIMAL(18, 12),
                                 output_cost_usd = r.output_cost_usd::DECIMAL(18, 12),
                                 cost_usd = r.cost_usd::DECIMAL(18, 12), saved_usd = r.saved_usd::DECIMAL(18, 12),
                                 price_version = r.price_version::VARCHAR,
                                 priced_at = CASE WHEN r.price_version IS NOT NULL THEN now()::TIMESTAMP END
            FROM _repriced r
            WHERE llm_calls.rowid = r.row_id
        """)
    finally:
        con.unregister("_repriced")
    return plan.changed
