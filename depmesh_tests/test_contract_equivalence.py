"""The fast contract path answers exactly as Great Expectations does.

A randomized corpus of frames (ints with duplicates, floats and strings with
nulls, timestamps with NaT, empty frames, all-null columns) and of arguments
(bounds around the data, strict ends, ``mostly``, sets, regexes) is judged by
``depmesh.contracts.fast`` and by GX 1.x itself, for every expectation kind
the fast path covers: the verdicts, the failure counts, the observed values
and the first failing values must be the same.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from depmesh.contracts import fast
from depmesh.contracts import validate as gxv
from depmesh.contracts.compile import Rule

CASES_PER_KIND = 60
WORDS = ["a", "ab", "abc", "b", "bc", "c1", "a1c", "zz", "", "x y"]
REGEXES = ["^a", "c$", "[0-9]", "a.c", "^$", "b+"]


def frame(rng: random.Random) -> pd.DataFrame:
    n = rng.choice([0, 1, 2, 5, 17, 40, 80])
    np_rng = np.random.default_rng(rng.randrange(10**6))
    null_share = rng.choice([0.0, 0.0, 0.1, 0.5, 1.0])

    def nulls(values: np.ndarray) -> np.ndarray:
        return np_rng.random(n) < null_share if n else np.zeros(0, dtype=bool)

    f = np_rng.normal(rng.uniform(-5, 5), rng.uniform(0.5, 10), n).round(rng.choice([0, 1, 3]))
    f[nulls(f)] = np.nan
    g = np_rng.normal(0, 5, n).round(1)
    g[np_rng.random(n) < 0.1] = np.nan
    s = pd.Series(np_rng.choice(WORDS, n), dtype="str")
    s[nulls(s)] = None
    s2 = s.copy()
    s2[np_rng.random(n) < 0.3] = "a"
    t = pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(np_rng.integers(0, 1000, n), unit="h"))
    t[nulls(t)] = pd.NaT
    t = t.astype(rng.choice(["datetime64[ns]", "datetime64[us]", "datetime64[s]"]))
    if rng.random() < 0.3:
        t = t.dt.tz_localize("UTC")
    return pd.DataFrame({
        "i": np_rng.integers(-10, rng.choice([3, 50, 10**6]), n).astype("int64"),
        "i2": np_rng.integers(-10, 10, n).astype("int64"),
        "f": f, "g": g, "s": s, "s2": s2, "t": t,
    })


def _bounds(rng: random.Random, values: list[float]) -> dict:
    span = (min(values), max(values)) if values else (-5.0, 5.0)
    width = (span[1] - span[0]) or 1.0
    lo = rng.choice([None, span[0] + rng.uniform(-0.3, 0.6) * width, span[0]])
    hi = rng.choice([None, span[1] - rng.uniform(-0.3, 0.6) * width, span[1]])
    if lo is None and hi is None:
        lo = span[0]
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    out = {"min_value": lo, "max_value": hi}
    if rng.random() < 0.4:
        out["strict_min"] = rng.random() < 0.5
        out["strict_max"] = rng.random() < 0.5
    return out


def _mostly(rng: random.Random) -> dict:
    return {"mostly": rng.choice([0.5, 0.8, 0.95])} if rng.random() < 0.4 else {}


def _stat(df: pd.DataFrame, column: str, how: str) -> list[float]:
    col = df[column].dropna()
    if not len(col):
        return []
    return [float(getattr(col, how)())] if how != "range" else [float(col.min()), float(col.max())]


def arguments(kind: str, df: pd.DataFrame, rng: random.Random) -> dict:
    numeric = rng.choice(["i", "f", "g"])
    if kind in ("expect_column_values_to_not_be_null", "expect_column_values_to_be_null"):
        return {"column": rng.choice(["f", "s", "t", "i"]), **_mostly(rng)}
    if kind == "expect_column_values_to_be_between":
        return {"column": numeric, **_bounds(rng, _stat(df, numeric, "range")), **_mostly(rng)}
    if kind == "expect_column_values_to_be_in_set":
        if rng.random() < 0.5:
            return {"column": "s", "value_set": rng.sample(WORDS, rng.randint(1, 8)), **_mostly(rng)}
        return {"column": "i2", "value_set": rng.sample(range(-10, 10), rng.randint(1, 18)), **_mostly(rng)}
    if kind == "expect_column_values_to_be_unique":
        return {"column": rng.choice(["i", "f", "s", "i2"]), **_mostly(rng)}
    if kind in ("expect_column_values_to_match_regex", "expect_column_values_to_not_match_regex"):
        return {"column": "s", "regex": rng.choice(REGEXES), **_mostly(rng)}
    if kind == "expect_column_value_lengths_to_be_between":
        lo = rng.choice([None, 0, 1, 2])
        hi = rng.choice([None, 1, 2, 3]) if lo is not None else rng.choice([1, 2, 3])
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        return {"column": "s", "min_value": lo, "max_value": hi, **_mostly(rng)}
    if kind == "expect_compound_columns_to_be_unique":
        return {"column_list": rng.choice([["i2", "s"], ["i2", "f"], ["s", "s2"]]), **_mostly(rng)}
    if kind == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = rng.choice([("f", "g"), ("i", "i2"), ("i2", "f")])
        return {"column_A": a, "column_B": b, **({"or_equal": rng.random() < 0.5} if rng.random() < 0.7 else {}),
                **_mostly(rng)}
    if kind == "expect_column_pair_values_to_be_equal":
        a, b = rng.choice([("i", "i2"), ("s", "s2"), ("i2", "i2")])
        return {"column_A": a, "column_B": b, **_mostly(rng)}
    if kind == "expect_table_row_count_to_be_between":
        lo, hi = rng.choice([None, 0, len(df), len(df) + 1]), rng.choice([None, len(df), max(0, len(df) - 1), 100])
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        return {"min_value": lo, "max_value": hi}
    if kind in ("expect_column_min_to_be_between", "expect_column_max_to_be_between"):
        if rng.random() < 0.3:
            pivot = pd.Timestamp("2024-01-01") + pd.Timedelta(hours=rng.randint(0, 1000))
            if getattr(df["t"].dtype, "tz", None) is not None:
                pivot = pivot.tz_localize("UTC")
            return {"column": "t", rng.choice(["min_value", "max_value"]): pivot}
        return {"column": numeric, **_bounds(rng, _stat(df, numeric, "range"))}
    if kind in ("expect_column_mean_to_be_between", "expect_column_median_to_be_between",
                "expect_column_stdev_to_be_between", "expect_column_sum_to_be_between"):
        how = {"mean": "mean", "median": "median", "stdev": "std", "sum": "sum"}[kind.split("_")[2]]
        return {"column": numeric, **_bounds(rng, _stat(df, numeric, how) * 2)}
    if kind in ("expect_column_unique_value_count_to_be_between",
                "expect_column_proportion_of_unique_values_to_be_between"):
        column = rng.choice(["i2", "s", "f"])
        col = df[column].dropna()
        value = col.nunique() if "count" in kind else (col.nunique() / len(col) if len(col) else 0.5)
        bounds = _bounds(rng, [float(value), float(value)])
        if "count" in kind and rng.random() < 0.9:  # GX declares integer bounds here (a fractional one goes to GX)
            bounds = {k: (round(v) if k.endswith("value") and v is not None else v) for k, v in bounds.items()}
        return {"column": column, **bounds}
    if kind == "expect_column_quantile_values_to_be_between":
        qs = sorted(rng.sample([0.05, 0.25, 0.5, 0.75, 0.95], rng.randint(1, 3)))
        col = df[numeric].dropna()
        ranges = []
        for q in qs:
            v = float(col.quantile(q, interpolation="nearest")) if len(col) else 0.0
            ranges.append([v - rng.uniform(-0.5, 2), v + rng.uniform(-0.5, 2)])
        return {"column": numeric, "quantile_ranges": {"quantiles": qs, "value_ranges": ranges}}
    raise AssertionError(f"no corpus for {kind}: add one (every kind the fast path covers is held to GX here)")


def _same(a, b) -> bool:
    a, b = gxv._plain(a), gxv._plain(b)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def through_gx(df: pd.DataFrame, kind: str, kwargs: dict) -> dict:
    rule = Rule("r", kind, kwargs, "ERROR")
    r = gxv._run(df, [rule], {"result_format": "SUMMARY", "partial_unexpected_count": fast.SAMPLE})["r"]
    return {"success": bool(r.success), "result": dict(r.result or {}), "exception": r.exception_info}


@pytest.mark.parametrize("kind", sorted(fast.EVALUATORS))
def test_the_fast_path_gives_great_expectations_verdicts_counts_and_values(kind):
    rng = random.Random(f"equivalence:{kind}")
    answered, verdicts = 0, set()
    for case in range(CASES_PER_KIND):
        df = frame(rng)
        kwargs = arguments(kind, df, rng)
        mine = fast.evaluate(df, kind, kwargs)
        if mine is None:
            continue  # left to GX by design (a dtype or argument it answers by another path)
        answered += 1
        verdicts.add(mine["success"])
        theirs = through_gx(df, kind, kwargs)
        where = f"{kind} case {case}: kwargs={kwargs} rows={len(df)}\n{df.head(8)}"
        assert mine["success"] == theirs["success"], f"verdict differs: fast {mine}, GX {theirs}\n{where}"
        for field in ("unexpected_count", "unexpected_percent", "observed_value", "element_count"):
            if field in theirs["result"] or field in mine["result"]:
                assert _same(mine["result"].get(field), theirs["result"].get(field)), (
                    f"{field} differs: fast {mine['result'].get(field)!r}, GX {theirs['result'].get(field)!r}\n{where}")
        if theirs["result"].get("partial_unexpected_list") is not None:
            assert _same(mine["result"]["partial_unexpected_list"], theirs["result"]["partial_unexpected_list"]), (
                f"failing values differ: fast {mine['result']['partial_unexpected_list']}, "
                f"GX {theirs['result']['partial_unexpected_list']}\n{where}")
    # the corpus must exercise the fast path, not only its fall-back to GX
    assert answered >= CASES_PER_KIND // 2, f"{kind}: the fast path answered only {answered} of {CASES_PER_KIND} cases"
    assert verdicts == {True, False}, f"{kind}: the corpus only ever {'passed' if True in verdicts else 'failed'}"


def test_a_rule_the_fast_path_does_not_cover_goes_to_great_expectations():
    df = pd.DataFrame({"x": pd.array([1, 2, None], dtype="Int64")})
    # a nullable integer column: GX compares it value by value, so the fast path leaves it to GX
    assert fast.evaluate(df, "expect_column_values_to_be_between", {"column": "x", "min_value": 0}) is None
    # an argument the fast path does not know
    assert fast.evaluate(df, "expect_column_values_to_not_be_null", {"column": "x", "row_condition": "x>1"}) is None
    assert fast.evaluate(df, "expect_column_kl_divergence_to_be_less_than", {"column": "x"}) is None


def test_the_demo_contracts_never_import_great_expectations(golden):
    """Every contract of the flights mesh, judged on its real stored tables (a
    reference profile from the same table, so distribution bounds apply, and
    freshness anchored), in a fresh process: no rule goes to GX."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        import pandas as pd
        from dagster import DagsterInstance
        from depmesh.assets.io import MeshStore, storage_dir
        from depmesh.catalog import load_catalog
        from depmesh.contracts.compile import compile_contract, profile
        from depmesh.contracts.validate import validate
        from depmesh.examples import DEMO_CATALOG

        instance = DagsterInstance.from_config({str(golden.home)!r})
        store = MeshStore(storage_dir(instance), instance=instance)
        judged = 0
        for node in load_catalog(DEMO_CATALOG).nodes:
            if node.contract is None or node.kind == "model":
                continue
            frame = store.load(node.key_path)
            now = pd.Timestamp.now(tz="UTC")
            report = validate(frame, compile_contract(node.contract, reference=profile(frame, node.contract), now=now))
            judged += len(report.outcomes)
        print(judged, "great_expectations" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    judged, imported = out.stdout.split()
    assert int(judged) > 50
    assert imported == "False", "a demo contract rule went through Great Expectations (see depmesh.contracts.fast)"


@pytest.mark.parametrize("kind, column, extra", [
    ("expect_column_values_to_be_null", [None] * 18 + [1.0, 2.0], {}),
    ("expect_column_values_to_not_be_null", [1.0] * 18 + [None, None], {}),
    ("expect_column_values_to_be_between", list(range(20)), {"min_value": 0, "max_value": 17}),
    ("expect_column_values_to_be_unique", list(range(18)) + [18, 18], {}),
    ("expect_column_values_to_be_in_set", [1] * 18 + [7, 8], {"value_set": [1]}),
])
def test_mostly_decides_the_verdict_as_in_great_expectations(kind, column, extra):
    """Exactly 90% of the rows meet the expectation: ``mostly`` 0.8 passes it, 0.95 and no ``mostly`` fail it, on
    the fast path and in GX alike (a fast path that ignored ``mostly`` would fail the first)."""
    df = pd.DataFrame({"x": pd.Series(column, dtype="float64" if kind.endswith("null") else None)})
    for mostly, expected in ((0.8, True), (0.95, False), (None, False)):
        kwargs = {"column": "x", **extra, **({"mostly": mostly} if mostly is not None else {})}
        mine = fast.evaluate(df, kind, kwargs)
        assert mine is not None, f"{kind}: the fast path should answer this"
        theirs = through_gx(df, kind, kwargs)
        assert mine["success"] is expected and theirs["success"] is expected, (mostly, mine, theirs)
