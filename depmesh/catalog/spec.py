"""The typed mesh spec: what a validated catalog file becomes.

Everything here is plain, frozen data. Nothing imports Dagster, pandas or the
trainers: the spec is the contract between the catalog loader and everything
built from it (graph, assets, contracts, registry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any

from depmesh.kinds import (
    KINDS as KINDS,  # re-exported: the catalog names the kinds it accepts
)
from depmesh.kinds import NODE_KINDS

SERIALIZERS = ("skops", "pickle")  # how a model is written (depmesh.artifacts); skops runs no code on load

# Each kind of node and the Dagster group (domain) its assets land in (the table: depmesh.kinds).
KIND_GROUPS: dict[str, str] = {name: kind.group for name, kind in NODE_KINDS.items()}

# Criticality levels and the weight each carries in blast-radius scores.
CRITICALITY_WEIGHTS: dict[str, int] = {"low": 1, "medium": 2, "high": 4, "critical": 8}

# Column dtypes a contract may name, and the pandas dtype kinds each accepts.
DTYPES: dict[str, tuple[str, ...]] = {
    "int64": ("int64", "Int64"),
    "int32": ("int32", "Int32"),
    "float64": ("float64", "Float64"),
    "float32": ("float32", "Float32"),
    "string": ("str", "string", "object"),
    "bool": ("bool", "boolean"),
    "datetime": ("datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"),
    "datetime_tz": ("datetime64[ns, UTC]", "datetime64[us, UTC]", "datetime64[ms, UTC]", "datetime64[s, UTC]"),
    "category": ("category",),
}


SEVERITIES = ("ERROR", "WARN")

@dataclass(frozen=True)
class ExpectationKind:
    """One Great Expectations expectation depmesh knows: what a catalog must give it (``required``), the arguments
    depmesh's own pandas evaluator answers (``understood``: with any other, GX answers), and whether a catalog may
    write it under ``contract.expectations`` (the others come from columns, row_count, keys, distribution)."""

    required: tuple[str, ...]
    understood: frozenset[str]
    declarable: bool = True


_COMMON = frozenset({"column", "mostly"})
_BOUNDS = frozenset({"min_value", "max_value", "strict_min", "strict_max"})
_AGGREGATE = frozenset({"column"}) | _BOUNDS

# The one table of expectation kinds: a new kind is a row here and its evaluator in depmesh.contracts.fast (which
# refuses to import while either lacks the other).
EXPECTATIONS: dict[str, ExpectationKind] = {
    "expect_column_values_to_not_be_null": ExpectationKind(("column",), _COMMON),
    "expect_column_values_to_be_null": ExpectationKind(("column",), _COMMON),
    "expect_column_values_to_be_between": ExpectationKind(("column",), _COMMON | _BOUNDS, declarable=False),
    "expect_column_values_to_be_in_set": ExpectationKind(("column", "value_set"), _COMMON | {"value_set"},
                                                         declarable=False),
    "expect_column_values_to_be_unique": ExpectationKind(("column",), _COMMON, declarable=False),
    "expect_column_values_to_match_regex": ExpectationKind(("column", "regex"), _COMMON | {"regex"}),
    "expect_column_values_to_not_match_regex": ExpectationKind(("column", "regex"), _COMMON | {"regex"}),
    "expect_column_value_lengths_to_be_between": ExpectationKind(("column",), _COMMON | _BOUNDS),
    "expect_compound_columns_to_be_unique": ExpectationKind(("column_list",), frozenset({"column_list", "mostly"}),
                                                            declarable=False),
    "expect_column_pair_values_a_to_be_greater_than_b": ExpectationKind(
        ("column_A", "column_B"), frozenset({"column_A", "column_B", "or_equal", "mostly"})),
    "expect_column_pair_values_to_be_equal": ExpectationKind(("column_A", "column_B"),
                                                             frozenset({"column_A", "column_B", "mostly"})),
    "expect_table_row_count_to_be_between": ExpectationKind((), _BOUNDS, declarable=False),
    "expect_column_min_to_be_between": ExpectationKind(("column",), _AGGREGATE),
    "expect_column_max_to_be_between": ExpectationKind(("column",), _AGGREGATE),
    "expect_column_mean_to_be_between": ExpectationKind(("column",), _AGGREGATE),
    "expect_column_median_to_be_between": ExpectationKind(("column",), _AGGREGATE),
    "expect_column_stdev_to_be_between": ExpectationKind(("column",), _AGGREGATE),
    "expect_column_sum_to_be_between": ExpectationKind(("column",), _AGGREGATE),
    "expect_column_unique_value_count_to_be_between": ExpectationKind(("column",), _AGGREGATE),
    "expect_column_proportion_of_unique_values_to_be_between": ExpectationKind(("column",), _AGGREGATE),
    "expect_column_quantile_values_to_be_between": ExpectationKind(
        ("column", "quantile_ranges"), frozenset({"column", "quantile_ranges", "allow_relative_error"}),
        declarable=False),
}
# what a catalog may declare under contract.expectations, and the arguments it must give
EXTRA_EXPECTATIONS: dict[str, tuple[str, ...]] = {name: kind.required for name, kind in EXPECTATIONS.items()
                                                  if kind.declarable}


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    dtype: str
    nullable: bool = True
    unique: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None
    description: str = ""
    severity: str = "ERROR"
    max_null_fraction: float | None = None  # for nullable columns: the share of nulls allowed


@dataclass(frozen=True)
class DistributionSpec:
    """A statistic of a column that may move at most ``max_change`` (absolute)
    from the reference: the last materialization that met its contract."""

    column: str
    stat: str  # mean | quantiles | share
    max_change: float
    quantiles: tuple[float, ...] = ()
    value: Any = None  # the category, for share
    severity: str = "ERROR"


@dataclass(frozen=True)
class FreshnessSpec:
    """How old the newest record (``column``) or the last materialization may be, in hours."""

    max_age_hours: float
    column: str | None = None
    severity: str = "WARN"


@dataclass(frozen=True)
class ExpectationSpec:
    type: str
    kwargs: Mapping[str, Any]
    severity: str = "ERROR"


@dataclass(frozen=True)
class ContractSpec:
    version: str = "1.0.0"
    columns: tuple[ColumnSpec, ...] = ()
    min_rows: int | None = None
    max_rows: int | None = None
    row_count_severity: str = "ERROR"
    keys: tuple[tuple[str, ...], ...] = ()  # compound unique keys
    keys_severity: str = "ERROR"
    freshness: FreshnessSpec | None = None
    distribution: tuple[DistributionSpec, ...] = ()
    expectations: tuple[ExpectationSpec, ...] = ()

    def column(self, name: str) -> ColumnSpec | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class EdgeContract:
    """What a consumer needs from one of its inputs: the columns it reads
    and, when the input is a model, a p95 latency budget for its predictions."""

    columns: tuple[str, ...] = ()
    latency_p95_ms: float | None = None


@dataclass(frozen=True)
class TimeSplit:
    """A fixed time split: train before ``train_until``, evaluate on
    [train_until, evaluate_until), score from ``evaluate_until`` on. The
    evaluation window never moves between versions, so metrics compare."""

    time_column: str
    train_until: date
    evaluate_until: date

    def describe(self) -> str:
        return f"[{self.train_until}, {self.evaluate_until}) on {self.time_column}"


@dataclass(frozen=True)
class RandomSplit:
    """Rows assigned by a seeded hash of ``key`` (or of the row position):
    ``evaluate_share`` evaluated, ``score_share`` scored, the rest trained on.
    The same row lands in the same part in every run, whatever the row order."""

    evaluate_share: float
    score_share: float = 0.0
    seed: int = 0
    key: str | None = None

    def describe(self) -> str:
        return (f"a seeded random split (seed {self.seed}, by {self.key or 'row position'}): "
                f"{self.evaluate_share:.0%} evaluated, {self.score_share:.0%} scored")


@dataclass(frozen=True)
class ColumnSplit:
    """Rows assigned by the value of a group or holdout column."""

    column: str
    evaluate: tuple[Any, ...]
    score: tuple[Any, ...] = ()

    def describe(self) -> str:
        return (f"{self.column} in {list(self.evaluate)} evaluated" +
                (f", in {list(self.score)} scored" if self.score else "") + ", the rest trained on")


@dataclass(frozen=True)
class TableSplit:
    """A fixed evaluation table: the rows of input ``evaluate`` are the
    evaluation set; the trainer's own frame is all training data."""

    evaluate: str

    def describe(self) -> str:
        return f"the fixed evaluation table {self.evaluate}"


Split = TimeSplit | RandomSplit | ColumnSplit | TableSplit


@dataclass(frozen=True)
class GateSpec:
    """Deployment gate thresholds for one model (every model gets every gate;
    the catalog's model.gates overrides these defaults)."""

    max_regression: float = 0.05  # relative, against Production (or the naive baseline for a first version)
    single_p95_ms: float = 50.0
    batch_p95_ms: float = 2000.0
    batch_rows: int = 1000
    subgroups: tuple[str, ...] = ()  # columns whose groups are scored separately
    subgroup_min_rows: int = 50
    subgroup_limit: float | None = None  # floor (higher-is-better metric) or ceiling (lower-is-better)
    subgroup_max_gap: float | None = None
    malformed_timeout_s: float = 10.0
    max_peak_mb: float = 512.0


GATE_KEYS = {f.name for f in fields(GateSpec)}  # what model.gates may set: the spec's fields, nothing restated


@dataclass(frozen=True)
class MetricSpec:
    """Metrics by scikit-learn scorer name; ``primary`` is what the quality and subgroup gates judge."""

    primary: str
    higher_is_better: bool = True
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchParam:
    """One dimension of a search space: ``int`` / ``float`` between low and
    high (``step``, ``log`` optional), ``loguniform`` (float, log scale) or
    ``categorical`` (choices)."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class TuneSpec:
    """A model's hyperparameter search (depmesh.tuning): what to vary, how to
    sample, what to prune by, how many trials and how long."""

    space: tuple[SearchParam, ...]
    metric: str  # a key of the model's metrics (or its declared primary scorer)
    higher_is_better: bool
    sampler: str = "tpe"  # tpe | random | grid
    pruner: str = "none"  # hyperband | successive_halving | median | none
    trials: int = 20
    timeout_s: float | None = None
    steps: int = 10  # an iterative fit is split into this many steps, each reported to the pruner
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    trainer: str
    target: str | None
    split: "Split"
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    schedule: str | None = None  # cron: when to retrain
    gates: GateSpec = field(default_factory=GateSpec)
    # how the estimator is stored: skops (no code runs on load) or, by explicit
    # opt-in for estimators skops cannot hold, pickle
    serializer: str = "skops"
    trusted_types: tuple[str, ...] = ()  # extra types a skops file may load (beyond scikit-learn's)
    metrics: MetricSpec | None = None  # declared metrics (else the trainer's, judged by the task's default)
    tune: TuneSpec | None = None  # a hyperparameter search over params (depmesh tune)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    kind: str
    owner: str
    description: str = ""
    inputs: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    criticality: str = "medium"
    compute: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    contract: ContractSpec | None = None
    model: ModelSpec | None = None
    edges: Mapping[str, EdgeContract] = field(default_factory=dict)  # input name -> what this node needs of it
    predictions: tuple[str, ...] = ()  # a scores node's prediction columns (what a simulation compares)
    # row lineage: input -> {this node's column: the input's column}, the keys that join a row here to the
    # input's rows behind it (depmesh trace); a key missing from this node's row is read from the rows already
    # traced in its other inputs (a score row's tailnum from its flight's feature row)
    lineage: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    line: int | None = None
    # each field's own line in the catalog (an error about inputs or edges points there, not at the node)
    key_lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key_path(self) -> list[str]:
        return self.name.split("/")

    @property
    def group(self) -> str:
        return KIND_GROUPS[self.kind]

    @property
    def entrypoint(self) -> str:
        """The ``module:function`` that builds this node."""
        return self.model.trainer if self.model else self.compute  # type: ignore[return-value]


@dataclass(frozen=True)
class RolloutThresholds:
    """What a candidate may not exceed beside Production, on the same rows (None: not judged)."""

    max_metric_regression: float | None = 0.05  # relative, in the metric's bad direction, on labelled rows
    max_error_rate: float | None = 0.0  # share of its rows the candidate could not score
    max_prediction_shift: float | None = None  # |mean(candidate) - mean(production)| / std(production)
    max_disagreement: float | None = None  # share of rows whose predictions differ beyond the tolerance
    max_latency_ratio: float | None = 5.0  # candidate's scoring time over production's, same batch, same process


@dataclass(frozen=True)
class RolloutStep:
    percent: float
    min_rows: int
    thresholds: RolloutThresholds


@dataclass(frozen=True)
class RolloutSpec:
    """How a release rolls out (the catalog's ``rollout:``): rows split by a hash of ``key``."""

    key: str
    steps: tuple[RolloutStep, ...]
    disagreement_tolerance: float = 0.0  # regression: |difference| above this is a disagreement
    confidence: float = 0.95  # the A/B report's interval
    bootstrap: int = 2000  # its resamples
    line: int | None = None


ADVISORY_SEVERITIES = ("low", "medium", "high", "critical")  # a vulnerability's severity, in rising order


@dataclass(frozen=True)
class DependencyPolicy:
    """The catalog's ``dependencies:``: license policy and the vulnerability gate on promotion."""

    allowed_licenses: tuple[str, ...] = ()  # SPDX ids; empty: any license not denied
    denied_licenses: tuple[str, ...] = ()
    advisories: str | None = None  # a directory of OSV advisories (relative to the catalog), read on promotion
    block_severity: str = "high"  # a finding at or above it refuses a promotion unless waived
    upgrade_tolerance: float = 1e-9  # deps upgrade-diff: the largest prediction change an upgrade may cause


SERVING_MODES = ("production", "latest")  # what the scores serve: the registry's Production set, or what the run trained
BEFORE_FIRST_PROMOTION = ("skip", "candidate")  # a production mesh before any Production version: no scores, or the
# gated candidate labelled "not approved"


@dataclass(frozen=True)
class ServingSpec:
    """The catalog's ``serving:``: which model versions the scores nodes serve.

    ``production`` (the default): the registry's Production set, loaded from its record; a run that trains records
    a Staging release and leaves what is served as it was. ``latest``: what the run trained (development meshes;
    every place that shows a served version says so). ``before_first_promotion`` (production meshes only): what
    a scores node does while its model has no Production version: ``skip`` builds no scores and says which
    release to request, ``candidate`` serves the version that passed its gates in the run, labelled not approved."""

    mode: str = "production"
    before_first_promotion: str = "skip"


@dataclass(frozen=True)
class MeshSpec:
    name: str
    path: Path
    nodes: tuple[NodeSpec, ...]
    version: str = "1.0.0"
    description: str = ""
    rollout: RolloutSpec | None = None
    dependencies: DependencyPolicy | None = None
    serving: ServingSpec = ServingSpec()

    @cached_property
    def _by_name(self) -> dict[str, NodeSpec]:
        return {n.name: n for n in self.nodes}

    def node(self, name: str) -> NodeSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.path.name}: no node named {name!r}") from None

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def inputs_map(self) -> dict[str, tuple[str, ...]]:
        """Node name -> names of its inputs: the plain data graph functions take."""
        return {n.name: n.inputs for n in self.nodes}


def freshness_bounded(mesh: MeshSpec) -> list[NodeSpec]:
    """The nodes whose contract bounds the age of their last materialization (Dagster's freshness check)."""
    return [n for n in mesh.nodes if n.contract and n.contract.freshness and n.contract.freshness.column is None]
