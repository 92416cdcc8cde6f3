"""Run inside an environment (depmesh.deps.upgrade): for each model of a job file, load its registered artifact
(verified), retrain it from its recipe's input snapshots, and score the fixed evaluation window with the loaded
artifact; write the predictions beside the job and print one JSON line of what was found."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import sys
from pathlib import Path

from depmesh.versions import model_version


def probe(job: dict, out: Path) -> dict:
    import numpy as np
    import pandas as pd

    from depmesh.artifacts import ArtifactStore, PackedModel
    from depmesh.assets.factory import NodeContext, input_version, node_code_version
    from depmesh.catalog import load_catalog, resolve_entrypoint
    from depmesh.tracking.rebuild import load_inputs

    mesh = load_catalog(job["catalog"])
    store = ArtifactStore(job["artifacts"])
    found = {"libraries": {n: _version(n) for n in job["libraries"]}, "models": {}}
    for item in job["models"]:
        entry: dict = {}
        try:
            catalog_node = mesh.node(item["node"])
            node = dataclasses.replace(catalog_node, model=dataclasses.replace(
                catalog_node.model, params=item["params"], seed=item["seed"]))
            inputs = load_inputs(item["inputs"], store)
            ctx = NodeContext(node=node, sample_fraction=1.0, log=logging.getLogger("depmesh.upgrade"))
            retrained = resolve_entrypoint(node.entrypoint)(inputs, ctx)
            versions = {name: input_version(value) for name, value in sorted(inputs.items())}
            retrained.version = model_version(versions, node_code_version(catalog_node), node.model.params,
                                              node.model.seed)
            entry.update(retrained_version=retrained.version, metrics=retrained.metrics,
                         retrained_hash=PackedModel.of(retrained, node.model.serializer,
                                                       node.model.trusted_types).sha256)
            loaded = store.get(item["artifact_hash"], item["version"])  # verified against the registry's record
            # the model's evaluation window; a model without one (a segmentation) is scored on its input table
            frame = ctx.evaluation[0] if ctx.evaluation is not None else next(
                v for v in inputs.values() if isinstance(v, pd.DataFrame))
            scores = (loaded.predict_proba(frame) if loaded.task == "classification" else loaded.predict(frame))
            path = out / f"{item['node'].replace('/', '__')}.npy"
            np.save(path, np.asarray(scores, dtype="float64"))
            entry.update(predictions=str(path), rows=int(len(frame)))
        except Exception as exc:  # noqa: BLE001 - a model that fails here is the finding
            entry["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        found["models"][item["node"]] = entry
    return found


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(job_file: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(probe(json.loads(Path(job_file).read_text()), out), default=float))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
