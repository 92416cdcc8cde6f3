"""The shapes of the files a team writes (catalog.yaml, teams.yaml, failure_modes.yaml) as typed models, from
which their JSON Schemas are generated (``depmesh schema catalog|teams|failure-modes``; published under
``docs/content/schemas/``), so editors validate and complete them.

The parsers (depmesh.catalog.parse_*, depmesh.teams, depmesh.failure_modes.catalogue) stay the authority: they
check what a schema cannot (a node that exists, an entrypoint that imports, a contract column that is declared) and
name every problem at file:line:node:field. What the two must agree on, the keys each section allows, is checked
by the tests (``depmesh_tests/test_schemas.py``): a key added to a parser and not here, or here and not there,
fails them.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from depmesh.catalog.spec import (
    ADVISORY_SEVERITIES,
    CRITICALITY_WEIGHTS,
    DTYPES,
    EXTRA_EXPECTATIONS,
    SEVERITIES,
)
from depmesh.kinds import KINDS

Severity = Literal[tuple(SEVERITIES)]  # type: ignore[valid-type]
Number = float | int


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Column(_Section):
    dtype: Literal[tuple(DTYPES)] = Field(description="The column's type.")  # type: ignore[valid-type]
    nullable: bool = Field(True, description="Whether nulls are allowed.")
    max_null_fraction: float | None = Field(None, ge=0, le=1, description="With nullable: the largest share of nulls.")
    unique: bool = Field(False, description="Every value differs.")
    min: Number | str | None = Field(None, description="Smallest allowed value (a date for datetime columns).")
    max: Number | str | None = Field(None, description="Largest allowed value.")
    allowed: list[Any] | None = Field(None, description="The only values allowed.")
    description: str = ""
    severity: Severity | None = Field(None, description="ERROR blocks what is downstream, WARN only warns.")


class RowCount(_Section):
    min: int | None = None
    max: int | None = None
    severity: Severity | None = None


class Freshness(_Section):
    max_age: str | Number = Field(description="How old the newest data may be: hours, or '36h', '2d'.")
    column: str | None = Field(None, description="A timestamp column (else: the last materialization's time).")
    severity: Severity | None = None


class Distribution(_Section):
    column: str
    stat: Literal["mean", "quantiles", "share"]
    max_change: Number = Field(description="How far the statistic may move from the reference materialization.")
    quantiles: list[float] | None = None
    value: Any = Field(None, description="stat share: the value whose share is watched.")
    severity: Severity | None = None


class Expectation(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal[tuple(EXTRA_EXPECTATIONS)] = Field(  # type: ignore[valid-type]
        description="A Great Expectations expectation; its arguments beside it.")
    severity: Severity | None = None


class Contract(_Section):
    version: str = Field("1.0.0", description="Semantic version: a breaking change needs a major bump.")
    severity: Severity = "ERROR"
    columns: dict[str, Column] | list[dict[str, Any]] = Field(description="Each column by name.")
    row_count: RowCount | None = None
    keys: list[list[str]] | list[str] | None = Field(None, description="Column sets that are unique together.")
    freshness: Freshness | None = None
    distribution: list[Distribution] | None = None
    expectations: list[Expectation] | None = None


class Edge(_Section):
    node: str = Field(description="The input node.")
    columns: list[str] | None = Field(None, description="The columns this node reads from it (its edge contract).")
    latency_p95_ms: Number | None = Field(None, description="A bound on the input model's single-row p95 latency.")


class TimeSplit(_Section):
    time_column: str
    train_until: date | str
    evaluate_until: date | str


class RandomSplit(_Section):
    kind: Literal["random"]
    evaluate_share: float
    score_share: float | None = None
    seed: int | None = None
    key: str | None = None


class ColumnSplit(_Section):
    kind: Literal["column"]
    column: str
    evaluate: Any
    score: Any = None


class TableSplit(_Section):
    kind: Literal["table"]
    evaluate: str = Field(description="An input table that is the evaluation window.")


class Metrics(_Section):
    primary: str = Field(description="The metric the quality and subgroup gates judge (a scikit-learn scorer).")
    direction: Literal["higher", "lower"] | None = None
    also: list[str] | None = None


class Gates(_Section):
    max_regression: float | None = None
    single_p95_ms: Number | None = None
    batch_p95_ms: Number | None = None
    batch_rows: int | None = None
    subgroups: list[str] | None = None
    subgroup_min_rows: int | None = None
    subgroup_limit: Number | None = None
    subgroup_max_gap: Number | None = None
    malformed_timeout_s: Number | None = None
    max_peak_mb: Number | None = None


class SearchInt(_Section):
    type: Literal["int"]
    low: int
    high: int
    step: int | None = None
    log: bool | None = None


class SearchFloat(_Section):
    type: Literal["float"]
    low: Number
    high: Number
    step: Number | None = None
    log: bool | None = None


class SearchLogUniform(_Section):
    type: Literal["loguniform"]
    low: Number
    high: Number


class SearchCategorical(_Section):
    type: Literal["categorical"]
    choices: list[Any]


class Tune(_Section):
    space: dict[str, SearchInt | SearchFloat | SearchLogUniform | SearchCategorical]
    metric: str | None = None
    direction: Literal["maximize", "minimize"] | None = None
    sampler: Literal["tpe", "random", "grid"] | None = None
    pruner: Literal["hyperband", "successive_halving", "median", "none"] | None = None
    trials: int | None = None
    timeout: str | Number | None = None
    steps: int | None = None
    seed: int | None = None


class Model(_Section):
    trainer: str = Field(description="'module:function' that trains the model and returns a TrainedModel.")
    target: str | None = Field(None, description="The column to predict (absent: the model clusters).")
    params: dict[str, Any] | None = None
    seed: int | None = None
    split: TimeSplit | RandomSplit | ColumnSplit | TableSplit
    schedule: str | None = Field(None, description="A cron schedule for periodic retraining.")
    gates: Gates | None = None
    serializer: Literal["skops", "pickle"] | None = None
    trusted_types: list[str] | None = None
    metrics: Metrics | None = None
    tune: Tune | None = None


class Node(_Section):
    name: str = Field(description="The asset's name: segments joined by '/', e.g. models/arr_delay.")
    kind: Literal[tuple(KINDS)]  # type: ignore[valid-type]
    owner: str = Field(description="A team name (team:NAME) or an email.")
    description: str = ""
    inputs: list[str | Edge] = Field(default_factory=list)
    tags: dict[str, str] | None = None
    criticality: Literal[tuple(CRITICALITY_WEIGHTS)] = "medium"  # type: ignore[valid-type]
    compute: str | None = Field(None, description="'module:function' that builds the table (not for models).")
    params: dict[str, Any] | None = None
    contract: Contract | None = None
    model: Model | None = None
    predictions: list[str] | None = Field(None, description="A scores node's prediction columns.")
    lineage: dict[str, Any] | None = Field(None, description="Row lineage: how this node's rows key its inputs'.")


class Thresholds(_Section):
    max_metric_regression: float | None = None
    max_error_rate: float | None = None
    max_prediction_shift: float | None = None
    max_disagreement: float | None = None
    max_latency_ratio: float | None = None


class RolloutStep(_Section):
    percent: Number
    min_rows: int | None = None
    thresholds: Thresholds | None = None


class Rollout(_Section):
    key: str = Field(description="The column whose hash routes a row to the candidate or to Production.")
    steps: list[RolloutStep | Number] = Field(description="Each step's percent of rows, or {percent, min_rows, thresholds}.")
    min_rows: int | None = None
    thresholds: Thresholds | None = None
    disagreement_tolerance: Number | None = None
    confidence: float | None = None
    bootstrap: int | None = None


class Licenses(_Section):
    allowed: list[str] | None = None
    denied: list[str] | None = None


class Audit(_Section):
    advisories: str | None = Field(None, description="A folder of OSV advisories (relative to the catalog).")
    block: Literal[tuple(ADVISORY_SEVERITIES)] | None = None  # type: ignore[valid-type]


class Upgrade(_Section):
    tolerance: Number | None = None


class Dependencies(_Section):
    licenses: Licenses | None = None
    audit: Audit | None = None
    upgrade: Upgrade | None = None


class Serving(_Section):
    mode: Literal["production", "latest"] = "production"
    before_first_promotion: Literal["skip", "candidate"] = "skip"


class CatalogFile(_Section):
    """A depmesh catalog: one mesh of datasets, features, models, scores and consumers."""

    mesh: str = Field(description="The mesh's name (one registry holds several meshes).")
    version: str | None = None
    description: str = ""
    nodes: list[Node]
    rollout: Rollout | None = None
    dependencies: Dependencies | None = None
    serving: Serving | None = None


class Member(_Section):
    roles: list[Literal["owner", "on-call", "member"]]
    key: str | None = Field(None, description="An OpenSSH ed25519 public key: signs this member's approvals.")


class Team(_Section):
    members: dict[str, list[Literal["owner", "on-call", "member"]] | Member]
    webhook: str | None = Field(None, description="Where notifications go; ${VARIABLE} reads it from the environment.")
    description: str = ""


class TeamsFile(_Section):
    """teams.yaml beside a catalog: who owns, approves and is on call for the mesh's nodes."""

    mesh: str | None = None
    teams: dict[str, Team]
    signatures: Literal["required", "optional"] = "optional"


class Detector(_Section):
    node: str = Field(description="A node of the mesh ('*' for any, with check: run_failure).")
    check: str
    match: str | None = Field(None, description="A regular expression the failure's text must match.")


class FailureMode(_Section):
    id: str
    title: str
    type: Literal["internal", "external"]
    layer: Literal["data", "features", "model", "serving", "infrastructure", "external dependency"]
    severity: Literal["low", "medium", "high", "critical"]
    owner: str
    nodes: list[str] | None = None
    signals: list[str]
    detected_by: list[Detector] | None = None
    mitigation: str
    runbook: str
    rollback: str
    drill: str | None = Field(None, description="An injection that reproduces the fault (depmesh drill).")


class FailureModesFile(_Section):
    """failure_modes.yaml beside a catalog: how the mesh fails and what catches it."""

    mesh: str | None = None
    modes: list[FailureMode]


FILES: dict[str, type[BaseModel]] = {"catalog": CatalogFile, "teams": TeamsFile, "failure-modes": FailureModesFile}


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``kind``: catalog, teams or failure-modes."""
    schema = FILES[kind].model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text(kind: str) -> str:
    return json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n"
