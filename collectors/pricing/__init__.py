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
unpriced (cost NULL) until an override prices it and `perfdeck reprice` recomputes it.

A batch (`price_rows`, `price_frame`: what the collector calls on every ingested batch) is priced at
once, at about 1-3 µs a call instead of calc_price's ~100 µs: rates are looked up once per
(provider, model, price period), compiled to integers per token kind and tier, and applied to the
batch's columns (the numbered steps are above `PriceBook._price_columns`). The result is the same,
string for string, as `price()` call by call, which stays the reference and the fallback for any
call the batch path cannot vouch for.

The package: this module holds the price book, the override file and the public names; `compiled`
the prices compiled to integer rates and applied to a batch's columns; `reprice` repricing a range
on purpose (`perfdeck reprice`: `plan_reprice`, `apply_reprice`, `Repricing`, re-exported here)."""
from __future__ import annotations

import hashlib
import logging
import os
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice

from collectors.pricing.compiled import (
    _ARROW_TEXT,
    _BY_ROW,
    _MAX_KEYS,
    _TEXT,
    GENAI_PRICES,
    _apply,
    _bool_column,
    _compile_genai,
    _compile_rates,
    _cost_arrays,
    _find_genai,
    _groups,
    _int_column,
    _model_prices,
    _us_column,
)
from collectors.pricing.reprice import Repricing, apply_reprice, plan_reprice
from collectors.store.ingest import COST_COLUMNS

__all__ = ["COST_COLUMNS", "GENAI_PRICES", "MAX_COST_USD", "MTOK", "PRICE_INPUTS", "SCALE", "CallPrice", "PriceBook",
           "PriceFileError", "Rates", "Repricing", "apply_reprice", "plan_reprice", "read_overrides"]

log = logging.getLogger("perfdeck.pricing")

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
        self._snapshot = None       # genai-prices' price list the caches below were built from
        self._keys: dict = {}       # (provider, model) -> _resolve()'s answer; emptied with new overrides
        self._linear: dict = {}     # id(ModelPrice) -> (ModelPrice, _Linear | None)
        self.overrides = overrides or {}
        self.path = path
        self._mtime = self._stat()

    @property
    def overrides(self) -> dict[str, tuple[Rates, str]]:
        return self._overrides

    @overrides.setter
    def overrides(self, value: dict[str, tuple[Rates, str]]) -> None:
        self._overrides = value
        self._keys = {}

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
        cols = self._price_columns([df[c] for c in PRICE_INPUTS],
                                   lambda i: tuple(df[c].iat[i] for c in PRICE_INPUTS))
        for col, values in zip(COST_COLUMNS, cols):
            # text as the frame holds text (pandas' Arrow-backed str), without a trip through objects
            arrow_text = isinstance(_TEXT, pd.StringDtype)
            df[col] = pd.array(values, dtype=_TEXT) if arrow_text else values.to_numpy(zero_copy_only=False)

    def price_rows(self, rows) -> list[tuple]:
        """COST_COLUMNS values (costs as strings, exact) for each row of PRICE_INPUTS; None for unpriced rows."""
        rows = list(rows)
        if not rows:
            return []
        return list(zip(*(col.to_pylist() for col in self._price_columns(list(zip(*rows)), rows.__getitem__))))

    # -- pricing a batch at once -----------------------------------------------------------------
    # The steps, for the calls of a batch (price() is the reference they must equal, digit for digit):
    # 1. Group the calls by (provider, model) and resolve each pair once: an override, a genai-prices
    #    model (found as calc_price finds it), or unknown (unpriced). The answer is kept until the
    #    override file or genai-prices' snapshot changes.
    # 2. Pick the genai-prices ModelPrice in force: one per UTC day when the model's prices only change
    #    on a start date (genai-prices compares the call's UTC date), else call by call.
    # 3. Compile each ModelPrice once (_compile_genai): for each priced unit, its token count as
    #    genai-prices decomposes usage (input minus cache reads and writes...), its tiers, and its
    #    rates as integers at one decimal scale. Prices it cannot express exactly compile to None.
    # 4. Apply it to the group's columns in integer arithmetic (_apply): tier by input tokens, sum,
    #    round half-even to 10^-12 as _q does. saved_usd is the same formula without cache reads.
    # 5. Calls the fast path cannot vouch for (odd values, prices compiled to None, negative decomposed
    #    counts, sums past 27 digits where Decimal would round) go through price(), one by one.
    def _price_columns(self, cols, row_of) -> list:
        ts_col, provider_col, model_col, inp_col, out_col, cached_col, written_col, hit_col = cols
        ts, slow = _us_column(ts_col)
        n = len(ts)
        if not n:
            return [pa.array([], type=_ARROW_TEXT)] * len(COST_COLUMNS)
        inp, bad_i = _int_column(inp_col, optional=False)
        out, bad_o = _int_column(out_col, optional=False)
        cached, bad_c = _int_column(cached_col, optional=True)
        written, bad_w = _int_column(written_col, optional=True)
        hit, bad_h = _bool_column(hit_col)
        slow |= bad_i | bad_o | bad_c | bad_w | bad_h | (inp < 0) | (out < 0)
        cached = np.maximum(0, np.minimum(cached, inp))
        written = np.maximum(0, np.minimum(written, inp - cached))
        tokens = np.stack([inp, out, cached, written])

        snapshot = get_snapshot()
        if snapshot is not self._snapshot:
            self._snapshot, self._keys, self._linear = snapshot, {}, {}
        pico = np.zeros((3, n), dtype=np.int64)          # input, output, saved in 10^-12 USD
        version = np.full(n, None, dtype=object)
        for (provider, model), idx in _groups(provider_col, model_col, n):
            how = self._resolve(provider, model) if isinstance(model, str) else _BY_ROW
            if how is None:
                continue                                 # unknown model: unpriced, never zero
            try:
                self._price_group(how, model, idx, ts, tokens, hit, slow, pico, version)
            except Exception:                            # price() says what it is, call by call
                log.debug("pricing %s calls as a batch failed; pricing them one by one", model, exc_info=True)
                version[idx] = None
                slow[idx] = True
        cols = _cost_arrays(pico, version, hit)
        if slow.any():
            cols = [col.to_numpy(zero_copy_only=False) for col in cols]
            for i in np.flatnonzero(slow):
                for col, value in zip(cols, self._price_row(row_of(int(i)))):
                    col[i] = value
            cols = [pa.array(col, type=_ARROW_TEXT) for col in cols]
        return cols

    def _price_group(self, how, model, idx, ts, tokens, hit, slow, pico, version) -> None:
        kind, what, label = how
        if kind == "rows":
            slow[idx] = True
            return
        parts = ([(what, idx)] if kind == "override" else
                 [(self._compiled(mp), idx if sub is None else idx[sub]) for mp, sub in _model_prices(what, ts[idx])])
        for linear, rows in parts:
            if linear is None:
                slow[rows] = True
                continue
            rows = rows[~slow[rows]]
            if not len(rows):
                continue
            values, bad, over = _apply(linear, tokens[:, rows], hit[rows])
            if over.any():
                log.warning("%d %s calls priced past what the store holds; left unpriced", over.sum(), model)
            ok = ~(bad | over)
            slow[rows[bad]] = True
            pico[:, rows[ok]] = values[:, ok]
            version[rows[ok]] = label

    def _price_row(self, row) -> tuple:
        ts, provider, model, inp, outp, cached, written, hit = row
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
        return ((None,) * 5 if p is None else
                (str(p.input_cost_usd), str(p.output_cost_usd), str(p.cost_usd), str(p.saved_usd), p.version))

    def _resolve(self, provider: str | None, model: str):
        """How one (provider, model)'s calls are priced: ("override", _Linear, version), ("genai",
        ModelInfo, version), ("rows", ...) for call by call through price(), or None (unknown)."""
        key = (provider, model)
        if key in self._keys:
            return self._keys[key]
        if len(self._keys) >= _MAX_KEYS:     # a flood of made-up model names must not grow this for ever
            self._keys = {}
        override = self._override(provider, model)
        if override:
            linear = _compile_rates(override[0])
            how = ("override", linear, override[1]) if linear else _BY_ROW
        else:
            how = _find_genai(self._snapshot, provider, model)
        self._keys[key] = how
        return how

    def _compiled(self, model_price: ModelPrice):
        found = self._linear.get(id(model_price))
        if found is None or found[0] is not model_price:
            found = self._linear[id(model_price)] = (model_price, _compile_genai(model_price))
        return found[1]


def _q(x: Decimal) -> Decimal:
    return Decimal(x).quantize(SCALE, rounding=ROUND_HALF_EVEN)
