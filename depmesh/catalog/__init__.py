"""Catalog: the mesh as a team declares it, loaded into a typed MeshSpec."""

from depmesh.catalog.fields import resolve_entrypoint
from depmesh.catalog.load import load_catalog, parse_catalog
from depmesh.catalog.reader import CatalogError, Problem
from depmesh.catalog.spec import (
    CRITICALITY_WEIGHTS,
    DTYPES,
    EXTRA_EXPECTATIONS,
    KIND_GROUPS,
    KINDS,
    SEVERITIES,
    ColumnSpec,
    ColumnSplit,
    ContractSpec,
    DistributionSpec,
    EdgeContract,
    ExpectationSpec,
    FreshnessSpec,
    GateSpec,
    MeshSpec,
    MetricSpec,
    ModelSpec,
    NodeSpec,
    RandomSplit,
    TableSplit,
    TimeSplit,
)

__all__ = [
    "CRITICALITY_WEIGHTS", "DTYPES", "EXTRA_EXPECTATIONS", "KIND_GROUPS", "KINDS", "SEVERITIES", "CatalogError",
    "ColumnSpec", "ColumnSplit", "ContractSpec", "DistributionSpec", "EdgeContract", "ExpectationSpec", "FreshnessSpec", "GateSpec",
    "MeshSpec", "MetricSpec", "ModelSpec", "NodeSpec", "Problem", "RandomSplit", "TableSplit", "TimeSplit", "load_catalog", "parse_catalog",
    "resolve_entrypoint",
]
