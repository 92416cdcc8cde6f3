"""depmesh's own OpenLineage facets (OpenLineage has no model facets yet): what a model dataset is (its
version, metrics and gate verdicts) and what served a scores dataset (the release, its versions and its
approvers). Each is an attrs class on the client's facet base, so it serializes with the client's own events,
and each has a JSON Schema (``SCHEMAS``, published as docs/content/schemas/openlineage-facets.schema.json) that
its ``_schemaURL`` names."""

from __future__ import annotations

from typing import Any

import attr
from openlineage.client.generated.base import DatasetFacet

SCHEMA_FILE = "openlineage-facets.schema.json"
SCHEMA_BASE = f"https://depmesh.dev/schemas/{SCHEMA_FILE}"  # where the docs site publishes the file
MODEL_FACET = "depmesh_model"
SERVING_FACET = "depmesh_serving"


@attr.define
class DepmeshModelDatasetFacet(DatasetFacet):
    """A model as a dataset: the version its consumers read, its metrics and its gate verdicts."""

    node: str
    version: str
    task: str
    metrics: dict[str, float] = attr.field(factory=dict)
    gates: dict[str, dict[str, Any]] = attr.field(factory=dict)  # gate -> {passed, summary}
    upstream: dict[str, str] = attr.field(factory=dict)  # the models it was trained against -> version

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}#/$defs/DepmeshModelDatasetFacet"


@attr.define
class DepmeshServingDatasetFacet(DatasetFacet):
    """A scores table: which release and model versions served it, and who approved them."""

    mode: str  # production | candidate | latest
    versions: dict[str, str]
    release: int | None = None
    status: str | None = None
    approvers: list[str] = attr.field(factory=list)
    approved_at: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}#/$defs/DepmeshServingDatasetFacet"


_BASE = {"_producer": {"type": "string", "format": "uri"}, "_schemaURL": {"type": "string", "format": "uri"}}
_VERSIONS = {"type": "object", "additionalProperties": {"type": "string"}}

SCHEMAS: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_BASE,
    "title": "depmesh OpenLineage facets",
    "$defs": {
        "DepmeshModelDatasetFacet": {
            "type": "object", "additionalProperties": False,
            "required": ["_producer", "_schemaURL", "node", "version", "task", "metrics", "gates", "upstream"],
            "properties": {
                **_BASE, "node": {"type": "string"}, "version": {"type": "string", "minLength": 1},
                "task": {"type": "string"},
                "metrics": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
                "gates": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["passed"],
                    "properties": {"passed": {"type": "boolean"}, "summary": {"type": "string"}}}},
                "upstream": _VERSIONS}},
        "DepmeshServingDatasetFacet": {
            "type": "object", "additionalProperties": False,
            "required": ["_producer", "_schemaURL", "mode", "versions", "approvers"],
            "properties": {
                **_BASE, "mode": {"enum": ["production", "candidate", "latest"]}, "versions": _VERSIONS,
                "release": {"type": ["integer", "null"]}, "status": {"type": ["string", "null"]},
                "approvers": {"type": "array", "items": {"type": "string"}},
                "approved_at": {"type": ["string", "null"]}}},
    },
}
