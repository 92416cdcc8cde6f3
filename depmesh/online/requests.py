"""A predict request's body, read and checked before any model sees it.

The body is JSON, either ``{"records": [{column: value, ...}, ...]}`` or ``{"columns": {column: [values]}}``.
Every problem is collected and named with its column and rows, in the structured answer the malformed-input
gate promises (``depmesh.models.InvalidInput``: the model and its problems), as a 4xx: a missing or extra
column, a value of the wrong type, a category the model's encoder never saw, a value outside its feature
table's contract, NaN or infinity. Bodies and row counts are capped; nothing in a body reaches a 500.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from depmesh.online.schema import BOOLEAN, INTEGER, NUMBER, STRING, FeatureSchema

MAX_BODY_BYTES = 1_048_576
MAX_ROWS = 1_000
SHOWN_ROWS = 5  # rows named per problem


class BadRequest(Exception):
    """A request that is not answered: its HTTP status and what is wrong, by field."""

    def __init__(self, status: int, error: str, problems: list[str], *, fields: list[str] | None = None,
                 model: str | None = None):
        self.status, self.error, self.problems, self.fields, self.model = status, error, problems, fields or [], model
        super().__init__(f"{error}: " + "; ".join(problems))

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error, "problems": self.problems, "fields": self.fields}
        if self.model is not None:
            out["model"] = self.model
        return out


class _NonFinite:
    def __init__(self, text: str):
        self.text = text


def read_json(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> Any:
    if len(body) > max_bytes:
        raise BadRequest(413, "body_too_large", [f"the body is {len(body)} bytes; at most {max_bytes} are read"])
    try:
        return json.loads(body, parse_constant=_NonFinite)
    except RecursionError:
        raise BadRequest(400, "malformed_json", ["the body nests too deeply to be a table"]) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "malformed_json", [f"the body is not JSON: {str(exc)[:200]}"]) from None


def rows_of(payload: Any, max_rows: int = MAX_ROWS) -> dict[str, list[Any]]:
    """Column -> values, from a records or a columns body."""
    if not isinstance(payload, dict) or len({"records", "columns"} & set(payload)) != 1:
        raise BadRequest(400, "malformed_body", ['the body is {"records": [{column: value}, ...]} or '
                                                 '{"columns": {column: [values]}}'])
    if "records" in payload:
        records = payload["records"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise BadRequest(400, "malformed_body", ['"records" is a list of objects, one per row'])
        _cap(len(records), max_rows)
        names = list(dict.fromkeys(k for r in records for k in r))
        return {n: [r.get(n, _ABSENT) for r in records] for n in names}
    columns = payload["columns"]
    if not isinstance(columns, dict) or not all(isinstance(v, list) for v in columns.values()):
        raise BadRequest(400, "malformed_body", ['"columns" maps each column to a list of values'])
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise BadRequest(400, "malformed_body", [f"the columns have different lengths ({sorted(lengths)})"],
                         fields=sorted(columns))
    _cap(lengths.pop() if lengths else 0, max_rows)
    return {str(k): v for k, v in columns.items()}


_ABSENT = object()


def _cap(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise BadRequest(413, "too_many_rows", [f"{rows} rows sent; at most {max_rows} per request"])
    if rows == 0:
        raise BadRequest(400, "no_rows", ["the body holds no rows"])


def _rows(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:SHOWN_ROWS])
    return f"row {shown}" if len(indices) == 1 else f"rows {shown}" + (" ..." if len(indices) > SHOWN_ROWS else "")


def _check_value(field: Any, value: Any) -> str | None:
    """What is wrong with one value of ``field`` (None: nothing)."""
    if value is _ABSENT:
        return "absent (every record carries every column)"
    if isinstance(value, _NonFinite):
        return f"{value.text} is not a number (send null for a missing value)"
    if value is None:
        return None  # a missing value, as the models were trained with (see depmesh.online.schema)
    if field.type in (NUMBER, INTEGER):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {json.dumps(value)[:40]}"
        if isinstance(value, float) and not math.isfinite(value):
            return "not a finite number"
        if field.type == INTEGER and isinstance(value, float) and not value.is_integer():
            return f"expected an integer, got {value!r}"
        if field.min is not None and value < field.min:
            return f"{value!r} is below {field.min:g} (the contract of {field.source})"
        if field.max is not None and value > field.max:
            return f"{value!r} is above {field.max:g} (the contract of {field.source})"
    elif field.type == BOOLEAN:
        if not isinstance(value, bool):
            return f"expected true or false, got {json.dumps(value)[:40]}"
    elif field.type == STRING and not isinstance(value, str):
        return f"expected a string, got {json.dumps(value)[:40]}"
    if field.allowed is not None and value not in field.allowed:
        return f"{json.dumps(value)[:40]} is not allowed by the contract of {field.source} " \
               f"(allowed: {', '.join(map(str, field.allowed))})"
    if field.categories is not None and value not in field.categories:
        known = ", ".join(map(str, field.categories[:8])) + (" ..." if len(field.categories) > 8 else "")
        return f"unseen category {json.dumps(value)[:40]} (the model knows {known})"
    return None


@dataclass(frozen=True)
class Checked:
    """The request's rows as the model's columns (arrays, no frame: a frame per request costs more than the
    check), the dtypes a frame of them takes, and the rollout key of each row (None when not sent)."""

    columns: dict[str, Any]
    dtypes: dict[str, Any]
    keys: list[Any] | None
    rows: int

    def subset(self, mask: Any) -> Checked:
        import numpy as np

        return Checked({n: np.asarray(v)[mask] for n, v in self.columns.items()}, self.dtypes, None, int(mask.sum()))


def check(schema: FeatureSchema, columns: dict[str, list[Any]], dtypes: dict[str, Any]) -> Checked:
    """The columns for ``schema``'s model, or BadRequest(422) naming every problem by column and rows."""
    problems, fields = [], []
    names = set(schema.names)
    extra = sorted(c for c in columns if c not in names and c != schema.key)
    missing = [n for n in schema.names if n not in columns]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
        fields += missing
    if extra:
        problems.append(f"extra column(s) {', '.join(extra)}: the model reads its {len(schema.names)} feature columns"
                        + (f" and the rollout key {schema.key}" if schema.key else "")
                        + f" only (GET /v1/models/{schema.model} lists them)")
        fields += extra
    rows = len(next(iter(columns.values()))) if columns else 0
    for field in schema.fields:
        values = columns.get(field.name)
        if values is None:
            continue
        wrong: dict[str, list[int]] = {}
        for i, value in enumerate(values):
            why = _check_value(field, value)
            if why is not None:
                wrong.setdefault(why, []).append(i)
        for why, indices in wrong.items():
            problems.append(f"column {field.name}, {_rows(indices)}: {why}")
        if wrong:
            fields.append(field.name)
    keys = None
    if schema.key and schema.key in columns:
        keys = columns[schema.key]
        bad = [i for i, k in enumerate(keys) if isinstance(k, bool) or not isinstance(k, (str, int))]
        if bad:
            problems.append(f"column {schema.key} (the rollout key), {_rows(bad)}: expected a string or an integer")
            fields.append(schema.key)
    if problems:
        raise BadRequest(422, "invalid_input", problems, fields=list(dict.fromkeys(fields)), model=schema.model)
    import numpy as np

    arrays, kinds = {}, {}
    for f in schema.fields:
        if f.type in (NUMBER, INTEGER, BOOLEAN):  # as the model's own input check reads them: float64
            arrays[f.name] = np.asarray([np.nan if v is None else float(v) for v in columns[f.name]], dtype="float64")
        else:
            arrays[f.name] = np.asarray(columns[f.name], dtype=object)
            kinds[f.name] = dtypes.get(f.name, "object")
    return Checked(arrays, kinds, keys, rows)
