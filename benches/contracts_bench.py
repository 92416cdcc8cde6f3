"""Contract checks: depmesh's path (compile -> GX 1.x expectations answered
by the fast path) and the same expectations through Great Expectations itself,
against the same rules written by hand in pandas, side by side in one run.

    python3 -m uv run python benches/contracts_bench.py [--sizes 1e5,1e6,1e7] [--repeat 3]

Prints, per table size, the best-of-N seconds of each and their ratio, then the
fixed per-check overhead (measured on a 1,000-row table) and the one-off cost
of importing Great Expectations.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from depmesh.catalog import ColumnSpec, ContractSpec, DistributionSpec
from depmesh.contracts.compile import compile_contract, profile

CONTRACT = ContractSpec(
    version="1.0.0",
    min_rows=1, max_rows=10**9,
    columns=(
        ColumnSpec("flight_id", "int64", nullable=False, unique=True),
        ColumnSpec("dep_delay", "float64", max_null_fraction=0.05, min=-100, max=1500),
        ColumnSpec("origin", "string", nullable=False, allowed=("EWR", "JFK", "LGA")),
        ColumnSpec("temp", "float64", min=-20, max=120),
        ColumnSpec("hour", "int64", nullable=False, min=0, max=23),
    ),
    distribution=(DistributionSpec("dep_delay", "mean", max_change=5),),
)


def table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    delay = rng.gamma(1.5, 12, rows) - 10
    delay[rng.random(rows) < 0.02] = np.nan
    return pd.DataFrame({
        "flight_id": np.arange(rows, dtype="int64"),
        "dep_delay": delay,
        "origin": pd.Series(np.array(["EWR", "JFK", "LGA"])[rng.integers(0, 3, rows)], dtype="str"),
        "temp": rng.uniform(0, 100, rows),
        "hour": rng.integers(0, 24, rows).astype("int64"),
    })


def by_hand(df: pd.DataFrame, reference: dict) -> list[bool]:
    """The same contract, as a careful engineer would write it in pandas."""
    d, o, t, h, i = df["dep_delay"], df["origin"], df["temp"], df["hour"], df["flight_id"]
    mean = reference["dep_delay"]["mean"]
    return [
        str(i.dtype) == "int64", str(d.dtype) == "float64", str(o.dtype) in ("str", "string", "object"),
        str(t.dtype) == "float64", str(h.dtype) == "int64",
        bool(i.notna().all()), bool(i.is_unique),
        bool(d.isna().mean() <= 0.05), bool(d.dropna().between(-100, 1500).all()),
        bool(o.notna().all()), bool(o.isin(["EWR", "JFK", "LGA"]).all()),
        bool(t.dropna().between(-20, 120).all()),
        bool(h.notna().all()), bool(h.between(0, 23).all()),
        1 <= len(df) <= 10**9,
        abs(d.mean() - mean) <= 5,
    ]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1e5,1e6,1e7")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import sys

    from depmesh.contracts import validate as gxv

    def depmesh_check(df, reference, engine="fast"):
        gxv.FAST = engine == "fast"
        try:
            report = gxv.validate(df, compile_contract(CONTRACT, reference=reference))
        finally:
            gxv.FAST = True
        assert report.passed("ERROR"), report.describe_failures("ERROR")
        return report

    small = table(1_000)
    ref_small = profile(small, CONTRACT)
    n_rules = compile_contract(CONTRACT, reference=ref_small).size
    depmesh_check(small, ref_small)
    imported_by_fast = "great_expectations" in sys.modules
    started = time.perf_counter()
    gxv._gx()
    gx_import = time.perf_counter() - started
    depmesh_check(small, ref_small, "gx")  # warm the suite cache
    overhead_dm = best(lambda: depmesh_check(small, ref_small), 20)
    overhead_gx = best(lambda: depmesh_check(small, ref_small, "gx"), 10)
    overhead_pd = best(lambda: by_hand(small, ref_small), 20)

    print(f"contract: {n_rules} expectations (5 dtypes, 2 not-null, 1 null share, 3 ranges, "
          f"1 set, 1 unique, 1 row count, 1 mean vs reference)")
    print(f"Great Expectations import and context: {gx_import:.2f} s, paid only by a process whose contract has a "
          f"rule the fast path leaves to GX (this contract: {'paid' if imported_by_fast else 'never imported'})\n")
    print(f"{'rows':>12} {'depmesh (s)':>12} {'via GX (s)':>11} {'pandas (s)':>11} {'depmesh/pandas':>15} {'GX/pandas':>10}")
    for size in [int(float(s)) for s in args.sizes.split(",")]:
        df = table(size)
        reference = profile(df, CONTRACT)
        dm = best(lambda: depmesh_check(df, reference), args.repeat)
        gx = best(lambda: depmesh_check(df, reference, "gx"), args.repeat)
        pdt = best(lambda: by_hand(df, reference), args.repeat)
        assert all(by_hand(df, reference))
        print(f"{size:>12,} {dm:>12.3f} {gx:>11.3f} {pdt:>11.3f} {dm / pdt:>14.1f}x {gx / pdt:>9.1f}x", flush=True)
    print(f"\nfixed per-check overhead (1,000 rows): depmesh {overhead_dm * 1000:.2f} ms, via GX {overhead_gx * 1000:.1f} ms, "
          f"pandas {overhead_pd * 1000:.2f} ms; depmesh minus pandas {(overhead_dm - overhead_pd) * 1000:.2f} ms")
    print("depmesh: GX expectations answered by depmesh.contracts.fast (GX's pandas semantics, held to GX by "
          "depmesh_tests/test_contract_equivalence.py); via GX: every rule through Great Expectations 1.x, as before")


if __name__ == "__main__":
    main()
