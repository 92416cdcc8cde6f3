"""Which upstream model changes are waiting to be propagated, and what one
coordinated run must rebuild for them. Pure functions over plain data."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from depmesh import graph


def pending_changes(
    models: Iterable[str],
    inputs: Mapping[str, Sequence[str]],
    current: Mapping[str, str | None],
    consumed: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """Models whose current version some direct dependent has not yet been
    rebuilt against -> that current version.

    ``current``: node -> the data version of its latest materialization (None
    if never materialized). ``consumed``: node -> {input: the input's data
    version its latest materialization was built from}. A dependent that was
    never materialized does not count: it waits for its first build, which is
    not a change to propagate."""
    children = graph.children_of(inputs)
    pending: dict[str, str] = {}
    for model in models:
        version = current.get(model)
        if version is None:
            continue
        for child in children.get(model, ()):
            seen = consumed.get(child)
            if seen is not None and model in seen and seen[model] != version:
                pending[model] = version
                break
    return pending


def coordinated_selection(inputs: Mapping[str, Sequence[str]], changed: Iterable[str]) -> list[str]:
    """Everything downstream of the changed models, each node once, in the
    order a run builds them (the changed models themselves are already built)."""
    changed = list(changed)
    reach = set(graph.downstream(inputs, changed)) - set(changed)
    return [n for n in graph.topological_order(inputs) if n in reach]


def change_key(changes: Mapping[str, str]) -> str:
    """One idempotency key for a set of (model, version) changes."""
    text = ",".join(f"{m}@{v}" for m, v in sorted(changes.items()))
    return text if len(text) <= 200 else "changes-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def change_tag(model: str) -> str:
    """The run tag that records which version of ``model`` a run propagates."""
    return "depmesh/change." + model.replace("/", ".")
