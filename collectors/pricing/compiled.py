"""Prices compiled to integer rates: the batch path of `PriceBook._price_columns`.

What belongs here: a price (an override's `Rates` or a genai-prices `ModelPrice`) compiled once to
integer rates per token kind (the four counts a call reports) and per input-token tier (`_Linear`),
and applied to a batch's columns in integer arithmetic (`_apply`), rounded as `_q` rounds; the
converters that turn a batch's columns into those arrays (`_us_column`, `_int_column`,
`_bool_column`), the grouping by (provider, model) and the COST_COLUMNS written back as Arrow text.
The price book that decides what is priced how stays in the package's `__init__`."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import genai_prices
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from genai_prices.types import ConditionalPrice, ModelPrice, StartDateConstraint, TieredPrices

if TYPE_CHECKING:
    from collectors.pricing import Rates

GENAI_PRICES = f"genai-prices {genai_prices.__version__}"      # the price version stored on a row it priced


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
