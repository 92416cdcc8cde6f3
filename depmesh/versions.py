"""Content versions: what Dagster's DataVersion and the registry key on.

A table's version is a hash of its content (columns, dtypes, values). A
model's version is a hash of what made it: its inputs' versions, its code
version, its parameters and its seed. Same inputs, code and seed -> same
version, so a retrain that changes nothing changes no version.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

SHORT = 16


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def frame_version(df: Any) -> str:
    """Hash of a DataFrame's schema and values, independent of memory layout."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(canonical_json([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:SHORT]


def model_version(input_versions: Mapping[str, str], code_version: str, params: Mapping[str, Any], seed: int) -> str:
    """The version of a model: a hash of everything that made it."""
    payload = canonical_json(
        {"inputs": dict(input_versions), "code": code_version, "params": dict(params), "seed": seed}
    )
    return _digest(payload.encode())[:SHORT]


@lru_cache(maxsize=None)
def _module_source_hash(module_name: str) -> str:
    module = sys.modules.get(module_name)
    try:
        source = inspect.getsource(module) if module is not None else module_name
    except (OSError, TypeError):
        source = module_name
    return _digest(source.encode())


def code_version(entrypoint: str, settings: Mapping[str, Any]) -> str:
    """The code version of a node: its builder's module source and its
    settings in the catalog (parameters, target, split, seed). A change to
    either marks the asset and what lies downstream of it stale in Dagster."""
    module_name, _, func = entrypoint.partition(":")
    payload = canonical_json({"module": _module_source_hash(module_name), "func": func, "settings": dict(settings)})
    return _digest(payload.encode())[:12]
