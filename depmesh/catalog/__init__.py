"""Catalog: the mesh as a team declares it, loaded into a typed MeshSpec."""

from depmesh.catalog.load import CatalogError, Problem, load_catalog, parse_catalog, resolve_entrypoint
from depmesh.catalog.spec import (
    CRITICALITY_WEIGHTS,
    DTYPES,
    KIND_GROUPS,
    KINDS,
    ColumnSpec,
    ContractSpec,
    MeshSpec,
    ModelSpec,
    NodeSpec,
    TimeSplit,
)

__all__ = [
    "CRITICALITY_WEIGHTS", "DTYPES", "KIND_GROUPS", "KINDS", "CatalogError", "ColumnSpec", "ContractSpec",
    "MeshSpec", "ModelSpec", "NodeSpec", "Problem", "TimeSplit", "load_catalog", "parse_catalog",
    "resolve_entrypoint",
]
