"""What a request to one model must carry: its raw feature columns (its own and its upstream models'), each
column's type, the categories its encoder knows, and the bounds the catalog's contracts put on the feature table
the column comes from (its min, max and allowed values; not its nullable: false, which holds for the table's
own rows, while a request's row joined from it may miss a value, as the models' training rows did). Built from the model bundle (and the mesh, where the server has its catalog) once per
loaded version; written into a container's release manifest so a server without the catalog checks the same."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

NUMBER, INTEGER, STRING, BOOLEAN = "number", "integer", "string", "boolean"


@dataclass(frozen=True)
class Field:
    """One column a request carries."""

    name: str
    type: str  # number | integer | string | boolean
    categories: tuple[Any, ...] | None = None  # the values the model's encoder was fitted on (None: any)
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None
    source: str | None = None  # the feature table whose contract gave the bounds


@dataclass(frozen=True)
class FeatureSchema:
    model: str
    fields: tuple[Field, ...]
    example: dict[str, Any] = field(default_factory=dict)
    key: str | None = None  # the rollout key column a request may carry beside the features

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "key": self.key, "example": self.example,
                "fields": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(f).items()}
                           for f in self.fields]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FeatureSchema:
        fields = tuple(Field(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in f.items()})
                       for f in raw["fields"])
        return cls(raw["model"], fields, dict(raw.get("example") or {}), raw.get("key"))


def _type_of(dtype: Any) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype):
        return BOOLEAN
    if pd.api.types.is_integer_dtype(dtype):
        return INTEGER
    if pd.api.types.is_numeric_dtype(dtype):
        return NUMBER
    return STRING


def encoder_categories(estimator: Any) -> dict[str, tuple[Any, ...]]:
    """Column -> the categories an encoder inside ``estimator`` (a pipeline, a column transformer, an encoder)
    was fitted on; columns no encoder names are absent."""
    found: dict[str, tuple[Any, ...]] = {}
    steps = getattr(estimator, "steps", None)
    if steps:
        for _, step in steps:
            found.update(encoder_categories(step))
        return found
    for _, transformer, columns in getattr(estimator, "transformers_", ()):
        if hasattr(transformer, "categories_") and isinstance(columns, (list, tuple)):
            for column, values in zip(columns, transformer.categories_):
                found[str(column)] = tuple(_plain(v) for v in values if not _missing(v))
        elif hasattr(transformer, "transformers_") or hasattr(transformer, "steps"):
            found.update(encoder_categories(transformer))
    names = getattr(estimator, "feature_names_in_", None)
    if hasattr(estimator, "categories_") and names is not None:
        for column, values in zip(names, estimator.categories_):
            found[str(column)] = tuple(_plain(v) for v in values if not _missing(v))
    return found


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON carries."""
    return value.item() if hasattr(value, "item") else value


def _models(model: Any) -> list[Any]:
    out = [model]
    for upstream in model.upstream.values():
        out += _models(upstream)
    return out


def _contract_columns(mesh: Any, node: str) -> dict[str, tuple[str, Any]]:
    """Column -> (feature table, its ColumnSpec), over the model's inputs and its upstream models' inputs."""
    found: dict[str, tuple[str, Any]] = {}
    if mesh is None:
        return found
    names = {n.name for n in mesh.nodes}
    todo, seen = [node], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in names:
            continue
        seen.add(name)
        for source in mesh.node(name).inputs:
            spec = mesh.node(source)
            if spec.kind == "model":
                todo.append(source)
            elif spec.contract is not None:
                for column in spec.contract.columns:
                    found.setdefault(column.name, (source, column))
    return found


def schema_of(model: Any, mesh: Any = None) -> FeatureSchema:
    """The request schema of a loaded model (a TrainedModel with its upstream models)."""
    required = model.required_columns()
    sample = model.sample_input
    categorical = {c for m in _models(model) for c in m.categorical}
    categories: dict[str, tuple[Any, ...]] = {}
    for m in _models(model):
        for column, values in encoder_categories(m.estimator).items():
            categories.setdefault(column, values)
    contracts = _contract_columns(mesh, model.node)
    fields = []
    for name in required:
        source, column = contracts.get(name, (None, None))
        kind = _type_of(sample[name].dtype) if sample is not None and name in sample else (
            STRING if name in categorical else NUMBER)
        if name in categorical and kind != STRING and column is not None and column.dtype == "string":
            kind = STRING
        fields.append(Field(
            name=name, type=kind, categories=categories.get(name) if name in categorical else None,
            min=column.min if column is not None else None, max=column.max if column is not None else None,
            allowed=tuple(column.allowed) if column is not None and column.allowed is not None else None,
            source=source if column is not None else None))
    key = mesh.rollout.key if mesh is not None and mesh.rollout is not None else None
    return FeatureSchema(model.node, tuple(fields), example_row(sample, required), key)


def example_row(sample: Any, columns: list[str]) -> dict[str, Any]:
    """The first of the bundle's sample rows, as JSON (a missing value as null)."""
    import pandas as pd

    if sample is None or len(sample) == 0:
        return {}
    row = sample.iloc[0]
    return {c: (None if pd.isna(row[c]) else _plain(row[c])) for c in columns if c in sample}
