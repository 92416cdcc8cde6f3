"""Great Expectations' own pandas semantics for the expectation kinds
contracts use, evaluated directly on the frame.

Great Expectations stays the contract language (a rule is a GX expectation
name and its arguments) and its result format (``success`` and a ``result``
with ``observed_value``, ``element_count``, ``unexpected_count``,
``unexpected_percent`` and ``partial_unexpected_list``). What this module
skips is GX's machinery around the arithmetic: its import and data context
(seconds, once per process), and a metric-resolution graph per validation
(tens of milliseconds per check, and several passes over every column).

Each evaluator repeats what GX 1.x's pandas execution engine computes, read
off its source: map expectations judge the non-null values of a column
(``mostly`` over those), aggregates judge a statistic of the non-null values
with GX's between semantics. A rule this module does not cover exactly (an
argument it does not know, a column dtype GX treats by another path) returns
None and goes to GX. ``depmesh_tests/test_contract_equivalence.py`` holds
both paths to identical verdicts, counts and observed values on a randomized
corpus of frames, for every kind here.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from depmesh.catalog.spec import EXPECTATIONS

SAMPLE = 20  # GX's default partial_unexpected_count; validate keeps fewer

Result = dict[str, Any]


def _between(value: Any, kw: dict[str, Any]) -> bool:
    """GX's between for one value (a statistic): each end inclusive unless strict, an absent end open."""
    lo, hi = kw.get("min_value"), kw.get("max_value")
    above = True if lo is None else (value > lo if kw.get("strict_min") else value >= lo)
    below = True if hi is None else (value < hi if kw.get("strict_max") else value <= hi)
    return bool(above and below)


def _map_result(total: int, considered: int, bad: np.ndarray, mostly: float | None,
                values: Callable[[Any], list[Any]], nonnull: bool = True) -> Result:
    """GX's map result: ``bad`` marks the unexpected rows among the ``considered`` (non-null, or not ignored)
    ones; ``mostly`` of them must pass. ``nonnull``: the percent is over those rows, else over all rows."""
    unexpected = int(np.count_nonzero(bad))
    if total == 0 or considered == 0:
        success = True  # vacuously, as GX says
    else:
        success = (considered - unexpected) / considered >= (1.0 if mostly is None else mostly)
    percent = None
    if total > 0:
        if nonnull:
            percent = unexpected / considered * 100 if considered > 0 else None
        else:
            percent = unexpected / total * 100
    return {"success": bool(success), "result": {
        "element_count": total, "unexpected_count": unexpected, "unexpected_percent": percent,
        "partial_unexpected_list": values(bad) if unexpected else [],
    }}


def _first(series: pd.Series, bad: Any) -> list[Any]:
    return series[np.asarray(bad)].iloc[:SAMPLE].tolist()


def _nonnull(frame: pd.DataFrame, column: str) -> tuple[pd.Series, int]:
    col = frame[column]
    return (col[col.notna()] if col.hasnans else col), len(frame)


def _is_plain_number(series: pd.Series) -> bool:
    """int64 or float64: the dtypes GX compares vectorized (others go value by value in Python)."""
    return series.dtype in (np.dtype("int64"), np.dtype("float64"))


def _is_datetime(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_ns_dtype(series.dtype)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


# -- map expectations -------------------------------------------------------------------------


def not_be_null(frame: pd.DataFrame, kw: dict[str, Any]) -> Result | None:
    col = frame[kw["column"]]
    bad = col.isna().to_numpy()
    return _map_result(len(col), len(col), bad, kw.get("mostly"), lambda b: _first(col, b), nonnull=False)


def be_null(frame: pd.DataFrame, kw: dict[str, Any]) -> Result | None:
    col = frame[kw["column"]]
    bad = col.notna().to_numpy()
    return _map_result(len(col), len(col), bad, kw.get("mostly"), lambda b: _first(col, b), nonnull=False)


def _column_map(condition: Callable[[pd.Series], Any]) -> Callable[[pd.DataFrame, dict[str, Any]], Result | None]:
    def evaluate(frame: pd.DataFrame, kw: dict[str, Any]) -> Result | None:
        col, total = _nonnull(frame, kw["column"])
        ok = condition(col, kw)
        if ok is None:
            return None
        bad = ~np.asarray(ok, dtype=bool)
        return _map_result(total, len(col), bad, kw.get("mostly"), lambda b: _first(col, b))

    return evaluate


def _values_between(col: pd.Series, kw: dict[str, Any]) -> Any:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is None and hi is None:
        return None  # GX raises: let it say so
    numeric_bounds = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in (lo, hi))
    if not (_is_plain_number(col) and numeric_bounds):
        return None
    return _within(col.to_numpy(), kw)


def _within(values: np.ndarray, kw: dict[str, Any]) -> np.ndarray:
    """GX's vectorized between: each end inclusive unless strict, an absent end open."""
    lo, hi = kw.get("min_value"), kw.get("max_value")
    ok = np.ones(len(values), dtype=bool)
    if lo is not None:
        ok &= (values > lo) if kw.get("strict_min") else (values >= lo)
    if hi is not None:
        ok &= (values < hi) if kw.get("strict_max") else (values <= hi)
    return ok


def _in_set(col: pd.Series, kw: dict[str, Any]) -> Any:
    value_set = kw.get("value_set")
    if value_set is None:
        return np.ones(len(col), dtype=bool)
    if _is_datetime(col):
        return None
    return col.isin(value_set).to_numpy()


def _unique(col: pd.Series, kw: dict[str, Any]) -> Any:
    if col.is_unique:
        return np.ones(len(col), dtype=bool)
    return ~col.duplicated(keep=False).to_numpy()


def _regex(negate: bool) -> Callable[[pd.Series, dict[str, Any]], Any]:
    def condition(col: pd.Series, kw: dict[str, Any]) -> Any:
        found = col.astype(str).str.contains(kw["regex"]).to_numpy(dtype=bool)
        return ~found if negate else found

    return condition


def _lengths_between(col: pd.Series, kw: dict[str, Any]) -> Any:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is None and hi is None:
        return None
    return _within(col.astype(str).str.len().to_numpy(), kw)


def compound_unique(frame: pd.DataFrame, kw: dict[str, Any]) -> Result | None:
    columns = list(kw["column_list"])
    sub = frame[columns]
    keep = ~sub.isna().all(axis=1).to_numpy()  # GX's default: ignore rows whose values are all missing
    considered = sub[keep]
    bad = considered.duplicated(keep=False).to_numpy()
    return _map_result(len(frame), len(considered), bad, kw.get("mostly"),
                       lambda b: considered[b].iloc[:SAMPLE].to_dict("records"))


def _pair(condition: Callable[[pd.Series, pd.Series, dict[str, Any]], Any]) -> Callable[..., Result | None]:
    def evaluate(frame: pd.DataFrame, kw: dict[str, Any]) -> Result | None:
        a, b = frame[kw["column_A"]], frame[kw["column_B"]]
        keep = ~(a.isna() & b.isna()).to_numpy()  # GX's default: ignore rows where both are missing
        a, b = a[keep], b[keep]
        ok = condition(a, b, kw)
        if ok is None:
            return None
        bad = ~np.asarray(ok, dtype=bool)
        return _map_result(len(frame), len(a), bad, kw.get("mostly"),
                           lambda m: list(zip(a[m].iloc[:SAMPLE].tolist(), b[m].iloc[:SAMPLE].tolist())))

    return evaluate


def _greater(a: pd.Series, b: pd.Series, kw: dict[str, Any]) -> Any:
    if not (_is_numeric(a) and _is_numeric(b)):
        return None
    return (a >= b if kw.get("or_equal") else a > b).to_numpy(dtype=bool)


def _equal(a: pd.Series, b: pd.Series, kw: dict[str, Any]) -> Any:
    if a.dtype != b.dtype:
        return None
    return (a == b).to_numpy(dtype=bool)


# -- aggregates ---------------------------------------------------------------------------------


def _aggregate(statistic: Callable[[pd.Series], Any], numeric_only: bool = True,
               datetimes: bool = False) -> Callable[[pd.DataFrame, dict[str, Any]], Result | None]:
    def evaluate(frame: pd.DataFrame, kw: dict[str, Any]) -> Result | None:
        col = frame[kw["column"]]
        if pd.api.types.is_datetime64_any_dtype(col.dtype):
            if not datetimes:
                return None
            bounds = [kw.get("min_value"), kw.get("max_value")]
            if not all(v is None or isinstance(v, _dt.datetime) for v in bounds):
                return None
        elif numeric_only and not _is_numeric(col):
            return None
        elif not numeric_only and not (_is_numeric(col) or pd.api.types.is_string_dtype(col.dtype)):
            return None
        value = statistic(col)  # on the whole column, as GX's pandas metrics (skipping nulls themselves)
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or (not isinstance(value, _dt.datetime) and pd.isnull(value)):
            return {"success": False, "result": {"observed_value": None}}
        try:
            ok = _between(value, kw)
        except TypeError:
            return None  # e.g. a tz-aware maximum against a naive bound: GX's message, not ours
        return {"success": ok, "result": {"observed_value": value}}

    return evaluate


def row_count(frame: pd.DataFrame, kw: dict[str, Any]) -> Result | None:
    return {"success": _between(len(frame), kw), "result": {"observed_value": len(frame)}}


def quantiles(frame: pd.DataFrame, kw: dict[str, Any]) -> Result | None:
    col = frame[kw["column"]]
    spec = kw.get("quantile_ranges") or {}
    qs, ranges = list(spec.get("quantiles", [])), list(spec.get("value_ranges", []))
    if not _is_numeric(col) or len(qs) != len(ranges) or kw.get("allow_relative_error") not in (None, False):
        return None
    col = col[col.notna()]
    values = col.quantile(qs, interpolation="nearest").tolist()
    if any(pd.isnull(v) for v in values):
        return None
    ok = all(_quantile_in_range(v, lo, hi) for v, (lo, hi) in zip(values, ranges))
    return {"success": bool(ok), "result": {"observed_value": {"quantiles": qs, "values": values}}}


def _close(a: float, b: float) -> bool:
    """GX's isclose for quantile ranges: relative tolerance 1e-4, absolute 1e-8 (b is the control value)."""
    return bool(abs(a - b) <= 1e-8 + 1e-4 * abs(b)) if math.isfinite(b) else a == b


def _quantile_in_range(value: float, lo: Any, hi: Any) -> bool:
    lo = -math.inf if lo is None else lo
    hi = math.inf if hi is None else hi
    return _close(value, lo) or _close(value, hi) or lo <= value <= hi


def _integral_bounds(evaluator: Callable[[pd.DataFrame, dict[str, Any]], Result | None]) -> Callable[..., Result | None]:
    """GX declares these bounds as integers and truncates a fractional one: leave such a rule to GX."""
    def evaluate(frame: pd.DataFrame, kw: dict[str, Any]) -> Result | None:
        for name in ("min_value", "max_value"):
            v = kw.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v)):
                return None
        return evaluator(frame, kw)

    return evaluate


def _proportion_unique(col: pd.Series) -> Any:
    nonnull = int(col.notna().sum())
    return col.nunique() / nonnull if nonnull else 0  # GX: 0 when every value is null


# each expectation kind's evaluator (depmesh.catalog.spec.EXPECTATIONS says which arguments it understands;
# with any other, GX answers)
_EVALUATE: dict[str, Callable[[pd.DataFrame, dict[str, Any]], Result | None]] = {
    "expect_column_values_to_not_be_null": not_be_null,
    "expect_column_values_to_be_null": be_null,
    "expect_column_values_to_be_between": _column_map(_values_between),
    "expect_column_values_to_be_in_set": _column_map(_in_set),
    "expect_column_values_to_be_unique": _column_map(_unique),
    "expect_column_values_to_match_regex": _column_map(_regex(False)),
    "expect_column_values_to_not_match_regex": _column_map(_regex(True)),
    "expect_column_value_lengths_to_be_between": _column_map(_lengths_between),
    "expect_compound_columns_to_be_unique": compound_unique,
    "expect_column_pair_values_a_to_be_greater_than_b": _pair(_greater),
    "expect_column_pair_values_to_be_equal": _pair(_equal),
    "expect_table_row_count_to_be_between": _integral_bounds(row_count),
    "expect_column_min_to_be_between": _aggregate(lambda c: c.min(), datetimes=True),
    "expect_column_max_to_be_between": _aggregate(lambda c: c.max(), datetimes=True),
    "expect_column_mean_to_be_between": _aggregate(lambda c: c.mean()),
    "expect_column_median_to_be_between": _aggregate(lambda c: c[c.notna()].median()),
    "expect_column_stdev_to_be_between": _aggregate(lambda c: c.std()),
    "expect_column_sum_to_be_between": _aggregate(lambda c: c.sum()),
    "expect_column_unique_value_count_to_be_between": _integral_bounds(_aggregate(lambda c: c.nunique(),
                                                                                  numeric_only=False)),
    "expect_column_proportion_of_unique_values_to_be_between": _aggregate(_proportion_unique, numeric_only=False),
    "expect_column_quantile_values_to_be_between": quantiles,
}
if set(_EVALUATE) != set(EXPECTATIONS):  # one table of kinds: a kind without its evaluator, or the reverse
    raise ImportError(f"expectation kinds without an evaluator: {sorted(set(EXPECTATIONS) - set(_EVALUATE))}; "
                      f"evaluators of no kind: {sorted(set(_EVALUATE) - set(EXPECTATIONS))}")
# (evaluator, the arguments it understands)
EVALUATORS: dict[str, tuple[Callable[[pd.DataFrame, dict[str, Any]], Result | None], set[str]]] = {
    name: (_EVALUATE[name], set(kind.understood)) for name, kind in EXPECTATIONS.items()}


def evaluate(frame: pd.DataFrame, expectation: str, kwargs: dict[str, Any]) -> Result | None:
    """GX's result for ``expectation`` with ``kwargs`` on ``frame``, or None when GX must answer it."""
    entry = EVALUATORS.get(expectation)
    if entry is None:
        return None
    fn, known = entry
    given = {k: v for k, v in kwargs.items() if v is not None}
    if set(given) - known:
        return None
    lo, hi = given.get("min_value"), given.get("max_value")
    try:
        if lo is not None and hi is not None and lo > hi:
            return None  # GX refuses the expectation itself, in its words
    except TypeError:
        return None
    try:
        return fn(frame, given)
    except (TypeError, ValueError):
        return None  # GX reports these as exceptions in its own words
