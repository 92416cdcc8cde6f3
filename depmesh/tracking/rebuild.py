"""Run inside a reproduction environment (depmesh.tracking.reproduce): train
one node from a job file and compare with the registered artifact. Prints
one JSON line."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

from depmesh.metrics import declared_metrics
from depmesh.storage import location
from depmesh.versions import model_version


def read_bytes(where: str) -> bytes:
    """A stored file's bytes, from a local path or a storage URL (s3://...)."""
    if "://" not in where:
        return Path(where).read_bytes()
    # only code that has depmesh.storage records inputs on an object store

    return location(where).read_bytes()


def load_inputs(parts: dict, store) -> dict:
    """A recipe's inputs: each table from its snapshot, checked against the recorded hash (ValueError if it
    differs), each model from the artifact store (verified there). Shared with depmesh.deps.upgrade_probe."""
    import pandas as pd
    import pyarrow as pa

    from depmesh.artifacts import sha256

    inputs = {}
    for name, part in sorted(parts.items()):
        if part["kind"] == "table":
            payload = read_bytes(part["path"])
            if sha256(payload) != part["sha256"]:
                raise ValueError(f"the snapshot of {name} at {part['path']} does not hash to {part['sha256']}")
            # a pyarrow buffer, not io.BytesIO: see depmesh.artifacts.frame_from_parquet (this script runs against
            # a version's own, possibly older, depmesh, so it cannot count on that helper being there)
            inputs[name] = pd.read_parquet(pa.BufferReader(payload))
        else:
            inputs[name] = store.get(part["sha256"], part["version"])
    return inputs


def main(job_file: str) -> None:
    import numpy as np

    from depmesh.artifacts import ArtifactStore, PackedModel
    from depmesh.assets.factory import NodeContext, input_version, node_code_version
    from depmesh.catalog import load_catalog, resolve_entrypoint

    job = json.loads(Path(job_file).read_text())
    mesh = load_catalog(job["catalog"])
    catalog_node = mesh.node(job["node"])
    node = dataclasses.replace(catalog_node, model=dataclasses.replace(
        catalog_node.model, params=job["params"], seed=job["seed"]))
    store = ArtifactStore(job["artifacts"])
    try:
        inputs = load_inputs(job["inputs"], store)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    ctx = NodeContext(node=node, sample_fraction=1.0, log=logging.getLogger("depmesh.reproduce"))
    model = resolve_entrypoint(node.entrypoint)(inputs, ctx)
    if node.model.metrics is not None:

        model.metrics = {**model.metrics, **declared_metrics(model, node.model.metrics, ctx.evaluation)}
    versions = {name: input_version(value) for name, value in sorted(inputs.items())}
    model.version = model_version(versions, node_code_version(catalog_node), node.model.params, node.model.seed)
    packed = PackedModel.of(model, node.model.serializer, node.model.trusted_types)
    report = {"node": node.name, "version": job["version"], "rebuilt_version": model.version,
              "same_version": model.version == job["version"], "artifact_hash": job["artifact_hash"],
              "rebuilt_hash": packed.sha256, "bit_identical": packed.sha256 == job["artifact_hash"],
              "max_abs_difference": None, "rows_compared": 0, "metrics": model.metrics}
    if not report["bit_identical"] and ctx.evaluation is not None:
        original = store.get(job["artifact_hash"], job["version"])
        frame = ctx.evaluation[0]
        score = (lambda m: np.asarray(m.predict_proba(frame), dtype="float64")) if model.task == "classification" \
            else (lambda m: np.asarray(m.predict(frame), dtype="float64"))
        a, b = score(original), score(model)
        report["max_abs_difference"] = float(np.nanmax(np.abs(a - b))) if a.size else 0.0
        report["rows_compared"] = int(len(frame))
    print(json.dumps(report, default=float))


if __name__ == "__main__":
    main(sys.argv[1])
