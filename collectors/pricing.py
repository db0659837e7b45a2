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
call the batch path cannot vouch for."""
from __future__ import annotations

import hashlib
import logging
import os
import tomllib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import genai_prices
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ConditionalPrice, ModelPrice, StartDateConstraint, TieredPrices

from collectors.store import request_costs
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


# -- compiled prices ----------------------------------------------------------------------------
_BY_ROW = ("rows", None, None)
_MAX_KEYS = 10_000                      # (provider, model) answers kept
_TEXT = pd.Series(["text"]).dtype       # how this pandas holds text: its Arrow-backed str, or object
# the Arrow type behind it (large_string in pandas 3), so handing a column over copies nothing
_ARROW_TEXT = pa.array(pd.Series(["text"])).type if isinstance(_TEXT, pd.StringDtype) else pa.string()
_DAY_US = 86_400 * 10**6
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = _EPOCH.replace(tzinfo=None)
_PICO = 12                              # the store's scale: 10^-12 USD
_MAX_PICO = 10**18                      # MAX_COST_USD in 10^-12 USD
MTOK_INT = 1_000_000
_EXACT_DIGITS = 27                      # Decimal's 28-digit context is exact below this (margin of one)
# The usage a call reports, in this order in the token matrix: genai-prices' usage keys.
_REPORTED = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True)
class _Linear:
    """A price list entry as integers at one decimal scale. Between tier thresholds a call's input and
    output prices are linear in its _REPORTED token counts: row s of `inp`/`out` holds the rates
    (USD per token in 10^-scale) for calls with starts[s-1] < input tokens <= starts[s]."""
    scale: int
    starts: np.ndarray            # every tier threshold of every unit, ascending, distinct
    inp: np.ndarray               # (segments, 4) int64
    out: np.ndarray
    size: np.ndarray              # sum over units of rate x |coefficient|: bounds every partial sum
    checks: tuple                 # counts with a negative coefficient: a call making one negative goes to price()
    fast: tuple | None            # (inp, out) as int64 arrays, when they fit


def _scaled(d: Decimal, shift: int) -> int:
    """d x 10^shift as an int, exact (shift is at least d's count of decimals)."""
    sign, digits, exp = d.as_tuple()
    value = int("".join(map(str, digits)) or "0") * 10 ** (exp + shift)
    return -value if sign else value


def _linear(parts) -> _Linear | None:
    """parts: (output, coef, per, base, [(start, price), ...]) with prices as Decimal per `per` units;
    a tier's price applies to every unit counted when input tokens > start (genai-prices' cliff)."""
    scale = 0
    for _, _, per, base, tiers in parts:
        power = len(str(per)) - 1
        if type(per) is not int or per != 10**power:
            return None
        if any(type(start) is not int or start < 0 for start, _ in tiers):
            return None
        for d in (base, *(p for _, p in tiers)):
            if not isinstance(d, Decimal) or not d.is_finite() or d < 0:
                return None
            scale = max(scale, power + max(0, -d.as_tuple().exponent))
    starts = sorted({start for *_, tiers in parts for start, _ in tiers})
    # rows of python ints: rates can exceed int64; _apply picks int64 or exact objects by size
    inp = [[0] * len(_REPORTED) for _ in range(len(starts) + 1)]
    out = [[0] * len(_REPORTED) for _ in range(len(starts) + 1)]
    size = [[0] * len(_REPORTED) for _ in range(len(starts) + 1)]
    for output, coef, per, base, tiers in parts:
        shift = scale - (len(str(per)) - 1)
        own = sorted(tiers, key=lambda t: t[0])          # as TieredPrices sorts them (stable)
        for s in range(len(starts) + 1):
            # the last of this unit's tiers with start < input tokens, for input tokens in segment s
            price = base
            for start, p in own:
                if s and start <= starts[s - 1]:
                    price = p
            rate = _scaled(price, shift)
            for k, c in enumerate(coef):
                (out if output else inp)[s][k] += c * rate
                size[s][k] += abs(c) * rate
    checks = tuple(np.array(coef, dtype=np.int64) for _, coef, *_ in parts if min(coef) < 0)
    try:
        fast = (np.array(inp, dtype=np.int64), np.array(out, dtype=np.int64))
    except OverflowError:
        fast = None
    obj = [np.array(m, dtype=object) for m in (inp, out, size)]
    return _Linear(scale, np.array(starts, dtype=np.int64), *obj, checks, fast)


def _compile_rates(rates: Rates) -> _Linear | None:
    """An override as Rates.cost computes it: uncached input, cache reads and writes, output."""
    return _linear([(False, (1, 0, -1, -1), MTOK_INT, rates.input, []),
                    (False, (0, 0, 1, 0), MTOK_INT, rates.cache_read, []),
                    (False, (0, 0, 0, 1), MTOK_INT, rates.cache_write, []),
                    (True, (0, 1, 0, 0), MTOK_INT, rates.output, [])])



def _compile_genai(model_price: ModelPrice) -> _Linear | None:
    """A genai-prices ModelPrice as ModelPrice.calc_price applies it to a call's four token counts, or
    None when it holds anything this cannot follow exactly (its calls are then priced by calc_price)."""
    try:
        from genai_prices.units import _get_registry
        from genai_prices.validation import validate_priced_units

        registry = _get_registry()
        priced = [(registry.unit_for_price_key(key), value) for key, value in model_price.__dict__.items()
                  if not key.startswith("_") and value is not None]
        validate_priced_units(tuple(unit for unit, _ in priced), registry)
    except Exception:
        return None
    # Each unit is billed its leaf count: its usage less that of its more specific priced units
    # (genai_prices.decompose.compute_leaf_values), here as a combination of the reported counts.
    units = sorted((unit for unit, _ in priced if unit.usage_key != "requests"),
                   key=lambda unit: (-len(unit.dimensions), unit.usage_key))
    leaf: dict[str, list[int]] = {}
    for unit in units:
        vec = [int(unit.usage_key == key) for key in _REPORTED]
        for other in units:
            if other is not unit and unit.dimensions.items() <= other.dimensions.items():
                if other.usage_key not in leaf:
                    return None
                vec = [a - b for a, b in zip(vec, leaf[other.usage_key])]
        leaf[unit.usage_key] = vec
    parts = []
    for unit, value in priced:
        direction = unit.dimensions.get("direction")
        vec = leaf.get(unit.usage_key)
        if direction not in ("input", "output") or not vec or not any(vec):
            continue                  # nothing a call reports (a per-request fee counts in neither input nor output)
        if isinstance(value, TieredPrices):
            parts.append((direction == "output", vec, unit.per, value.base, [(t.start, t.price) for t in value.tiers]))
        else:
            parts.append((direction == "output", vec, unit.per, value, []))
    return _linear(parts)


def _find_genai(snapshot, provider: str | None, model: str):
    """The model as calc_price(model, provider_id=provider) finds it, or by the model alone when the
    provider is one genai-prices does not know (as PriceBook._genai retries)."""
    try:
        try:
            found_provider, info = snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            if provider is None:
                raise
            found_provider, info = snapshot.find_provider_model(model, None, None, None)
    except LookupError:
        return None
    except Exception:
        return _BY_ROW
    if found_provider.id == "groq" and info.id.startswith("whisper"):
        return _BY_ROW                # genai-prices bills these by audio seconds, its own way
    return ("genai", info, GENAI_PRICES)


def _model_prices(info, ts):
    """[(ModelPrice, positions in ts or None for all)] in force for calls at ts (µs since the epoch, UTC)."""
    prices = info.prices
    if isinstance(prices, ModelPrice):
        return [(prices, None)]
    by_price: dict[int, tuple[ModelPrice, list]] = {}
    if all(isinstance(c, ConditionalPrice) and (c.constraint is None or type(c.constraint) is StartDateConstraint)
           for c in prices):
        # StartDateConstraint.active compares the call's UTC date: the price is the same all day.
        days, which = np.unique(ts // _DAY_US, return_inverse=True)
        for j, day in enumerate(days.tolist()):
            mp = info.get_prices(_utc(day * _DAY_US))
            by_price.setdefault(id(mp), (mp, []))[1].append(j)
        return [(mp, np.flatnonzero(np.isin(which, js))) for mp, js in by_price.values()]
    for i, us in enumerate(ts.tolist()):                     # time-of-day prices: call by call
        mp = info.get_prices(_utc(us))
        by_price.setdefault(id(mp), (mp, []))[1].append(i)
    return [(mp, np.array(rows, dtype=np.int64)) for mp, rows in by_price.values()]


def _utc(us: int) -> datetime:
    """µs since the epoch as an aware UTC datetime (a call's time to the µs, as genai-prices compares it)."""
    return _EPOCH + timedelta(microseconds=us)


def _apply(linear: _Linear, tokens: np.ndarray, hit: np.ndarray):
    """Price the columns of `tokens` (_REPORTED x calls): ([input, output, saved] in 10^-12 USD, rounded
    half-even as _q rounds; calls that need price(); calls past what the store holds)."""
    n = tokens.shape[1]
    top = tokens.max(axis=1) if n else np.zeros(len(_REPORTED), dtype=np.int64)
    bound = int((np.abs(linear.inp).sum(axis=0) + np.abs(linear.out).sum(axis=0)) @ top.astype(object))
    wide = (linear.fast is None or linear.scale - _PICO > 18
            or (2 * bound + 1) * 10 ** max(0, _PICO - linear.scale) >= 2**62)
    x = tokens.astype(object) if wide else tokens
    seg = np.searchsorted(linear.starts, tokens[0], side="left") if len(linear.starts) else 0
    inp, out = (linear.inp, linear.out) if wide else linear.fast
    inp_rate, out_rate = inp[seg], out[seg]          # (4,) or (calls, 4)
    if len(linear.starts):
        paid_in, paid_out = (inp_rate.T * x).sum(axis=0), (out_rate.T * x).sum(axis=0)
        cache_read_rate = inp_rate[:, 2]
    else:
        paid_in, paid_out = inp_rate @ x, out_rate @ x
        cache_read_rate = inp_rate[2]
    full_in = paid_in - cache_read_rate * x[2]       # the same call without its cache reads
    bad = np.zeros(n, dtype=bool)
    for coef in linear.checks:
        bad |= np.asarray((coef.astype(object) if wide else coef) @ x < 0, dtype=bool)
    if wide:                                         # past 27 digits Decimal(prec=28) might round
        size = linear.size[seg]
        size = (size.T * x).sum(axis=0) if len(linear.starts) else size @ x
        bad |= np.asarray(size >= 10**_EXACT_DIGITS, dtype=bool)
    scale = linear.scale
    qi = np.where(hit, 0, _round_pico(paid_in, scale))
    qo = np.where(hit, 0, _round_pico(paid_out, scale))
    qs = np.where(hit, _round_pico(paid_in + paid_out, scale), _round_pico(full_in - paid_in, scale))
    over = np.asarray((abs(qi + qo) >= _MAX_PICO) | (abs(qs) >= _MAX_PICO) | (abs(qi) >= _MAX_PICO), dtype=bool)
    over &= ~bad
    result = np.zeros((3, n), dtype=np.int64)
    keep = ~(bad | over)
    for k, v in enumerate((qi, qo, qs)):
        result[k, keep] = v[keep].astype(np.int64) if wide else v[keep]
    return result, bad, over


def _round_pico(v, scale: int):
    """v x 10^-scale USD in 10^-12 USD, rounded half-even (Decimal.quantize as _q does)."""
    if scale <= _PICO:
        return v * 10 ** (_PICO - scale)
    d = 10 ** (scale - _PICO)
    q = v // d
    r = v - q * d
    return q + np.asarray((2 * r > d) | ((2 * r == d) & (q % 2 == 1)), dtype=bool)


def _cost_arrays(pico: np.ndarray, version: np.ndarray, hit: np.ndarray) -> list[pa.Array]:
    """The COST_COLUMNS as Arrow text: exact decimals written as str(Decimal) writes them ("0" paid for
    a cache hit, as price() gives it) and the price version; null where version is None."""
    n = pico.shape[1]
    priced = version != None  # noqa: E711 (elementwise)
    valid = pa.py_buffer(np.packbits(priced, bitorder="little"))
    zero = pa.array(priced & hit)
    cols = []
    for k, v in enumerate((pico[0], pico[1], pico[0] + pico[1], pico[2])):
        v = np.ascontiguousarray(v, dtype=np.int64)     # |v| < 10^18: a decimal64's unscaled value
        text = pa.Array.from_buffers(pa.decimal64(18, _PICO), n, [valid, pa.py_buffer(v)]).cast(_ARROW_TEXT)
        cols.append(pc.if_else(zero, "0", text) if k < 3 else text)
    return [*cols, pa.array(version, type=_ARROW_TEXT)]


def _groups(provider_col, model_col, n: int):
    """((provider, model), positions) for each distinct pair; a provider that is not text is None."""
    m_codes, models = _factorize(model_col)
    p_codes, providers = _factorize(provider_col)
    key = (m_codes + 1) * (len(providers) + 1) + (p_codes + 1)
    order = np.argsort(key, kind="stable")
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    for rows in np.split(order, cuts):
        m, p = int(m_codes[rows[0]]), int(p_codes[rows[0]])
        provider = providers[p] if p >= 0 else None
        yield (provider if isinstance(provider, str) else None, models[m] if m >= 0 else None), rows


def _factorize(values) -> tuple[np.ndarray, list]:
    """int64 codes (-1 for a missing value) and the distinct values, as a list."""
    try:       # text columns: Arrow's dictionary encoding, without Python objects per row
        encoded = pa.array(values, type=_ARROW_TEXT).dictionary_encode()
        return (encoded.indices.fill_null(-1).to_numpy().astype(np.int64, copy=False),
                encoded.dictionary.to_pylist())
    except (pa.ArrowException, TypeError, ValueError):
        codes, uniques = pd.factorize(np.asarray(values, dtype=object))
        return codes.astype(np.int64, copy=False), list(uniques)


def _us_column(values):
    """µs since the epoch (UTC; naive means UTC), floored, and the calls whose time is not one."""
    s = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if not pd.api.types.is_datetime64_any_dtype(s.dtype):
        try:
            s = pd.to_datetime(s)
        except (TypeError, ValueError, OverflowError):
            pass
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(s.dtype):
        arr = s.to_numpy()
        unit = np.datetime_data(arr.dtype)[0]
        us = arr.view(np.int64) // 1000 if unit == "ns" else arr.astype("datetime64[us]").view(np.int64)
        return us, np.isnat(arr)
    us, bad = np.zeros(len(s), dtype=np.int64), np.zeros(len(s), dtype=bool)
    for i, ts in enumerate(s.tolist()):
        try:
            ts = ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts
            us[i] = (ts - _EPOCH_NAIVE) // timedelta(microseconds=1)
        except Exception:
            bad[i] = True
    return us, bad


def _int_column(values, *, optional: bool):
    """int64 token counts, as price() takes int(x) (int(x or 0) when optional), and the calls where that fails."""
    arr = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values, dtype=object)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64), np.zeros(len(arr), dtype=bool)
    out, bad = np.zeros(len(arr), dtype=np.int64), np.zeros(len(arr), dtype=bool)
    for i, x in enumerate(arr.tolist()):
        try:
            out[i] = int(x or 0) if optional else int(x)
        except Exception:
            bad[i] = True
    return out, bad


def _bool_column(values):
    arr = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values, dtype=object)
    if arr.dtype.kind == "b":
        return arr, np.zeros(len(arr), dtype=bool)
    out, bad = np.zeros(len(arr), dtype=bool), np.zeros(len(arr), dtype=bool)
    for i, x in enumerate(arr.tolist()):
        try:
            out[i] = bool(x)
        except Exception:
            bad[i] = True
    return out, bad


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
        repriced = con.execute("SELECT DISTINCT request_id FROM llm_calls WHERE request_id IS NOT NULL"
                               " AND rowid IN (SELECT row_id FROM _repriced)").df()["request_id"]
    finally:
        con.unregister("_repriced")
    request_costs.refresh(con, repriced)        # the per-request costs kept at ingest follow their calls
    return plan.changed
