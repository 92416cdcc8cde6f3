"""The ``--where`` language of ``depmesh runs list``: a small, safe subset of
Python expressions over a training's fields, e.g.

    params.max_iter >= 100 and metrics.mae < 12
    node == "models/dep_delay" and tags.trigger in ["cli", "tune"] and not status == "failed"

Names: ``params.X`` (the declared parameter X, else the estimator's, matched
by its last ``__`` part), ``metrics.X``, ``tags.X``, and the columns (node,
status, trigger, host, model_version, duration_s, peak_memory_mb, seed,
study, trial). Operators: and, or, not, comparisons (< <= > >= == !=, in,
not in), unary minus. Nothing is evaluated with ``eval``: the expression is
parsed into a tree and only these node types are accepted; anything else is
named in the error. A field a training does not have makes its comparison false.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from typing import Any

COLUMNS = {"node", "status", "trigger", "host", "model_version", "duration_s", "peak_memory_mb", "seed", "study",
           "trial", "run_id", "code_version", "git_commit", "id"}
GROUPS = {"params", "metrics", "tags"}
MISSING = object()
COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Eq: operator.eq, ast.NotEq: operator.ne,
           ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}


class WhereError(ValueError):
    """A --where expression that cannot be used, with what and where."""


def lookup(item: dict[str, Any], path: tuple[str, ...]) -> Any:
    if len(path) == 1:
        return item.get(path[0], MISSING)
    group, name = path[0], ".".join(path[1:])
    if group == "params":
        declared = item.get("declared_params") or {}
        if name in declared:
            return declared[name]
        full = item.get("params") or {}
        if name in full:
            return full[name]
        suffix = [value for key, value in full.items() if key.endswith(f"__{name}")]
        return suffix[0] if len(suffix) == 1 else MISSING
    return (item.get(group) or {}).get(name, MISSING)


MAX_TEXT = 2000
MAX_DEPTH = 40  # nested operators and parentheses: deeper is refused, not recursed into
SORT_RE = re.compile(r"^[+-]?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")


def _depth(tree: ast.AST) -> int:
    """How deep the tree nests, walked without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _path(node: ast.AST, text: str) -> tuple[str, ...]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise WhereError(f"--where {text!r}: {ast.unparse(node)!r} is not a field (use params.X, metrics.X, tags.X "
                         f"or one of {', '.join(sorted(COLUMNS))})")
    parts.append(node.id)
    path = tuple(reversed(parts))
    if any(part.startswith("__") for part in path):
        raise WhereError(f"--where {text!r}: {'.'.join(path)!r} is not a field (no name starts with '__')")
    if len(path) == 1 and path[0] not in COLUMNS:
        raise WhereError(f"--where {text!r}: unknown field {path[0]!r} (use params.X, metrics.X, tags.X or one of "
                         f"{', '.join(sorted(COLUMNS))})")
    if len(path) > 1 and path[0] not in GROUPS:
        raise WhereError(f"--where {text!r}: unknown group {path[0]!r} in {'.'.join(path)!r} (params, metrics, tags)")
    return path


def _compile(node: ast.AST, text: str) -> Callable[[dict[str, Any]], Any]:
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, text) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda item: all(p(item) for p in parts)
        return lambda item: any(p(item) for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile(node.operand, text)
        return lambda item: not inner(item)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _compile(node.operand, text)
        return lambda item: MISSING if (v := inner(item)) is MISSING else -v
    if isinstance(node, ast.Compare):
        left = _compile(node.left, text)
        rights = [_compile(c, text) for c in node.comparators]
        ops = [COMPARE.get(type(op)) for op in node.ops]
        if None in ops:
            raise WhereError(f"--where {text!r}: operator {type(node.ops[ops.index(None)]).__name__} is not allowed")

        def compare(item: dict[str, Any]) -> bool:
            a = left(item)
            for op, right in zip(ops, rights):
                b = right(item)
                if a is MISSING or b is MISSING:
                    return False
                try:
                    if not op(a, b):
                        return False
                except TypeError:
                    return False  # e.g. a text parameter compared with a number: not a match
                a = b
            return True
        return compare
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)) or (
            isinstance(node, ast.Constant) and node.value is None):
        value = node.value
        return lambda item: value
    if isinstance(node, (ast.List, ast.Tuple)):
        values = []
        for element in node.elts:
            if not isinstance(element, ast.Constant):
                raise WhereError(f"--where {text!r}: lists hold plain values, not {ast.unparse(element)!r}")
            values.append(element.value)
        frozen = tuple(values)
        return lambda item: frozen
    if isinstance(node, (ast.Attribute, ast.Name)):
        path = _path(node, text)
        return lambda item: lookup(item, path)
    raise WhereError(f"--where {text!r}: {ast.unparse(node)!r} is not allowed here (fields, plain values, "
                     "comparisons, and/or/not)")


def compile_where(text: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate over a training (its row with JSON columns decoded)."""
    if len(text) > MAX_TEXT:
        raise WhereError(f"--where is {len(text)} characters long; at most {MAX_TEXT}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise WhereError(f"--where {text!r}: not an expression ({exc.msg} at column {exc.offset})") from None
    except (RecursionError, MemoryError):
        raise WhereError(f"--where nests too deeply to parse (at most {MAX_DEPTH} levels)") from None
    if _depth(tree) > MAX_DEPTH:
        raise WhereError(f"--where nests more than {MAX_DEPTH} levels deep (operators and parentheses)")
    test = _compile(tree.body, text)
    return lambda item: bool(test(item))


def sort_key(text: str) -> Callable[[dict[str, Any]], Any]:
    """``metrics.mae`` (ascending) or ``-metrics.roc_auc`` (descending); trainings without the field go last."""
    descending = text.startswith("-")
    if len(text) > 300 or not SORT_RE.match(text.strip()):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise WhereError(f"--sort {shown!r}: name one field, e.g. metrics.mae or -metrics.roc_auc")
    path = _path(ast.parse(text.lstrip("-+").strip(), mode="eval").body, text)

    def key(item: dict[str, Any]) -> tuple[int, Any]:
        value = lookup(item, path)
        if value is MISSING or value is None:
            return (1, 0)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, -value if descending else value)
        return (0, str(value))  # text sorts ascending
    return key
