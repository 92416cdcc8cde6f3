"""Field-level checks the section parsers share: names, entrypoints, dates, numbers, severities, durations, column lists."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from depmesh.catalog.reader import _Checker
from depmesh.catalog.spec import (
    SEVERITIES,
)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
ENTRYPOINT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def resolve_entrypoint(ref: str) -> Callable[..., Any]:
    """Import ``module:function`` and return the callable (raises on failure)."""
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{ref} is a {type(fn).__name__}, not a function")
    return fn


def _check_entrypoint(c: _Checker, ref: Any, *, node: str, field: str, at: Any) -> str | None:
    if not c.typed(ref, str, "a 'module:function' string", node=node, field=field, at=at):
        return None
    if not ENTRYPOINT_RE.match(ref):
        c.add(f"{ref!r} is not of the form 'package.module:function'", node=node, field=field, at=at)
        return None
    module = ref.partition(":")[0]
    if module in c.missing_modules:
        c.missing_modules[module][4].append(node)
        return None
    try:
        resolve_entrypoint(ref)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):  # the module itself (or its package) is not on the path
            c.missing_modules[module] = (f"{type(exc).__name__}: {exc}", getattr(at, "line", None), field, ref, [node])
        else:
            c.add(f"cannot import {ref!r}: {type(exc).__name__}: {exc}", node=node, field=field, at=at)
        return None
    except Exception as exc:  # any import failure is the user's to see, named
        c.add(f"cannot import {ref!r}: {type(exc).__name__}: {exc}", node=node, field=field, at=at)
        return None
    c.modules.add(module)
    return ref


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _number(c: _Checker, value: Any, *, node: str, field: str, at: Any) -> float | None:
    if value is None:
        return None
    if c.typed(value, (int, float), "a number", node=node, field=field, at=at):
        return value
    return None


def _severity(c: _Checker, raw: Mapping, default: str, *, node: str, field: str) -> str:
    value = raw.get("severity", default)
    if value not in SEVERITIES:
        c.add(f"unknown severity {value!r} (known: {', '.join(SEVERITIES)})", node=node, field=field + "severity", at=raw)
        return default
    return value


def _duration(value: Any, units: Mapping[str, float]) -> float | None:
    """A bare number (as is), or a number with one of ``units``' letters
    (multiplied by its factor); None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(rf"\s*(\d+(?:\.\d+)?)\s*([{''.join(units)}])\s*", str(value))
    return float(match.group(1)) * units[match.group(2)] if match else None


def _hours(value: Any) -> float | None:
    """36, 36h, 90m, 2d -> hours; None when unreadable."""
    return _duration(value, {"m": 1 / 60, "h": 1, "d": 24})


def _seconds(value: Any) -> float | None:
    """90, 90s, 10m, 2h -> seconds; None when unreadable."""
    return _duration(value, {"s": 1, "m": 60, "h": 3600})


def _column_list(c: _Checker, value: Any, *, node: str, field: str, at: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        c.add(f"expected a non-empty list of column names, got {value!r}", node=node, field=field, at=at)
        return None
    return tuple(value)
