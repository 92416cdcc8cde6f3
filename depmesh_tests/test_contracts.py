"""Each kind of contract expectation, passing and failing, through the real
Great Expectations 1.x validation path (no Dagster needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from depmesh.catalog import (
    ColumnSpec,
    ContractSpec,
    DistributionSpec,
    ExpectationSpec,
    FreshnessSpec,
)
from depmesh.contracts.compile import compile_contract, profile
from depmesh.contracts.validate import validate

NOW = pd.Timestamp("2014-01-01 12:00", tz="UTC")


def frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "id": np.arange(n, dtype="int64"),
        "origin": pd.Series(["EWR", "JFK", "LGA", "EWR"] * (n // 4), dtype="str"),
        "delay": rng.normal(10, 5, n),
        "temp": rng.uniform(20, 80, n),
        "hour": np.tile(np.arange(10, dtype="int64"), n // 10),
        "day": np.repeat(np.arange(n // 10, dtype="int64"), 10),
        "tailnum": pd.Series([f"N{i:04d}" for i in range(n)], dtype="str"),
        "time_hour": pd.date_range("2014-01-01", periods=n, freq="min", tz="UTC"),
    })


def outcome(df, contract, rule_id, reference=None):
    report = validate(df, compile_contract(contract, reference=reference, now=NOW))
    matches = [o for o in report.outcomes if o.id == rule_id]
    assert matches, f"no rule {rule_id} in {[o.id for o in report.outcomes]}"
    return matches[0]


def col(name, dtype, **kw):
    return ColumnSpec(name=name, dtype=dtype, **kw)


CASES = [
    # (rule id, contract, how to break the frame, what the failure reports)
    ("origin.dtype", ContractSpec(columns=(col("origin", "string"),)),
     lambda d: d.assign(origin=d["origin"].astype("category")), "category"),
    ("delay.not_null", ContractSpec(columns=(col("delay", "float64", nullable=False),)),
     lambda d: d.assign(delay=d["delay"].where(d.index % 7 != 0)), None),
    ("temp.null_fraction", ContractSpec(columns=(col("temp", "float64", max_null_fraction=0.05),)),
     lambda d: d.assign(temp=d["temp"].where(d.index % 3 != 0)), None),
    ("temp.range", ContractSpec(columns=(col("temp", "float64", min=-20, max=120),)),
     lambda d: d.assign(temp=d["temp"].where(d.index > 2, 500.0)), 500.0),
    ("origin.allowed", ContractSpec(columns=(col("origin", "string", allowed=("EWR", "JFK", "LGA")),)),
     lambda d: d.assign(origin=d["origin"].where(d.index != 5, "XXX")), "XXX"),
    ("id.unique", ContractSpec(columns=(col("id", "int64", unique=True),)),
     lambda d: d.assign(id=d["id"].where(d.index != 9, 0)), 0),
    ("keys[0]", ContractSpec(columns=(col("day", "int64"), col("hour", "int64")), keys=(("day", "hour"),)),
     lambda d: d.assign(hour=d["hour"].where(d.index != 1, 0)), None),
    ("row_count", ContractSpec(min_rows=100, max_rows=1000), lambda d: d.head(50), 50),
    ("time_hour.freshness", ContractSpec(columns=(col("time_hour", "datetime_tz"),),
                                         freshness=FreshnessSpec(max_age_hours=24, column="time_hour")),
     lambda d: d.assign(time_hour=d["time_hour"] - pd.Timedelta(days=3)), None),
    ("expectations[0]", ContractSpec(columns=(col("tailnum", "string"),), expectations=(
        ExpectationSpec("expect_column_values_to_match_regex", {"column": "tailnum", "regex": "^N[0-9]+$"}),)),
     lambda d: d.assign(tailnum=d["tailnum"].where(d.index != 3, "bad")), "bad"),
]


@pytest.mark.parametrize("rule_id,contract,breaker,observed", CASES, ids=[c[0] for c in CASES])
def test_expectation_passes_on_good_data_and_fails_on_bad(rule_id, contract, breaker, observed):
    good = frame()
    assert outcome(good, contract, rule_id).success
    failed = outcome(breaker(good.copy()), contract, rule_id)
    assert not failed.success
    if observed is not None:
        assert observed == failed.observed or observed in failed.sample, failed


DISTRIBUTIONS = [
    (DistributionSpec("delay", "mean", max_change=2), "delay.mean", lambda d: d.assign(delay=d["delay"] + 5)),
    (DistributionSpec("temp", "quantiles", max_change=5, quantiles=(0.1, 0.5, 0.9)), "temp.quantiles",
     lambda d: d.assign(temp=d["temp"] * 1.5)),
    (DistributionSpec("origin", "share", max_change=0.05, value="EWR"), "origin.share[EWR]",
     lambda d: d.assign(origin=d["origin"].replace("JFK", "EWR"))),
]


@pytest.mark.parametrize("spec,rule_id,drift", DISTRIBUTIONS, ids=[d[1] for d in DISTRIBUTIONS])
def test_distribution_bound_against_the_reference(spec, rule_id, drift):
    contract = ContractSpec(columns=(col(spec.column, "float64" if spec.column != "origin" else "string"),),
                            distribution=(spec,))
    reference_frame = frame()
    reference = profile(reference_frame, contract)
    # no reference yet: the bound is reported as not applied, not silently passed
    compiled = compile_contract(contract, reference=None, now=NOW)
    assert not compiled.rules and "no reference materialization yet" in compiled.skipped[0]
    assert outcome(reference_frame, contract, rule_id, reference).success
    assert not outcome(drift(reference_frame.copy()), contract, rule_id, reference).success


def test_missing_column_fails_its_rules_with_a_reason():
    contract = ContractSpec(columns=(col("temp", "float64", min=0, max=100, nullable=False),))
    report = validate(frame().drop(columns=["temp"]), compile_contract(contract))
    failed = {o.id: o.observed for o in report.failed()}
    assert failed == {"temp.dtype": "column missing", "temp.not_null": "column temp missing",
                      "temp.range": "column temp missing"}


def test_severities_split_blocking_from_reported():
    contract = ContractSpec(columns=(
        col("temp", "float64", min=0, max=100, severity="ERROR"),
        col("delay", "float64", min=0, max=1, severity="WARN"),
    ))
    report = validate(frame(), compile_contract(contract))
    assert report.passed("ERROR")
    assert not report.passed("WARN")
    assert [o.id for o in report.failed("WARN")] == ["delay.range"]


def test_failure_details_carry_counts_and_a_few_values():
    contract = ContractSpec(columns=(col("temp", "float64", min=0, max=100),))
    bad = frame().assign(temp=lambda d: d["temp"].where(d.index >= 40, 999.0))
    failed = outcome(bad, contract, "temp.range")
    assert failed.unexpected_count == 40
    assert failed.unexpected_percent == pytest.approx(20.0)
    assert failed.sample == [999.0] * 5
