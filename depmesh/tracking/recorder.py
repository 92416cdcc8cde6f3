"""Tracks one model training inside its Dagster step: what went in, how long
and how much memory it took, the curves, the metrics, and how it ended
(registered, rejected by a gate, failed); builds the version's recipe."""

from __future__ import annotations

import contextlib
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from depmesh.tracking.capture import (
    PeakMemory,
    code_state,
    estimator_params,
    host,
    module_file,
    staged_curves,
)
from depmesh.tracking.snapshots import SnapshotStore
from depmesh.tracking.store import Tracking, new_id


class TrainingRecorder:
    """Around a trainer call: ``with recorder.measure(): ...``, then
    ``recipe(model)`` (before registering) and ``record(...)``."""

    def __init__(self, *, registry: Any, node: Any, run_id: str | None, trigger: str, tags: dict[str, str],
                 storage: Path | None, catalog_path: Path | None, code: str, study: str | None = None,
                 trial: int | None = None):
        self.tracking = Tracking(registry)
        self.node, self.run_id, self.trigger, self.tags = node, run_id, trigger, tags
        self.storage, self.catalog_path, self.code = storage, catalog_path, code
        self.study, self.trial = study, trial
        self.id = new_id()
        self.started_at = datetime.now(UTC)
        self.seconds = 0.0
        self.memory = PeakMemory()
        self._recipe: dict[str, Any] | None = None

    @contextlib.contextmanager
    def measure(self):
        """Around the trainer call: its start, wall time and peak memory."""
        self.started_at = datetime.now(UTC)
        started = time.perf_counter()
        with self.memory:
            try:
                yield
            finally:
                self.seconds = time.perf_counter() - started

    # -- the recipe ------------------------------------------------------------------------
    def _snapshots(self) -> SnapshotStore | None:
        return SnapshotStore(self.storage / "snapshots") if self.storage is not None else None

    def snapshot_inputs(self, inputs: dict[str, Any], records: dict[str, dict[str, Any] | None],
                        versions: dict[str, str]) -> dict[str, Any]:
        """Each input as a content-addressed snapshot: a table's stored bytes
        (hard-linked), an upstream model's artifact hash; ``versions``: each
        input's data or model version, as the training recorded it."""
        import io

        from depmesh.models import TrainedModel

        snapshots = self._snapshots()
        out: dict[str, Any] = {}
        for name, value in sorted(inputs.items()):
            record = records.get(name) or {}
            if isinstance(value, TrainedModel):
                if record.get("model_version") == value.version and record.get("artifact_hash"):
                    out[name] = {"kind": "model", "sha256": str(record["artifact_hash"]), "version": value.version}
                continue
            if snapshots is None:
                continue
            digest = record.get("file_sha256")
            path = self.storage / "tables" / Path(*name.split("/")[:-1]) / f"{name.split('/')[-1]}.parquet"
            if not (digest and snapshots.put_file(path, str(digest))):
                buffer = io.BytesIO()  # the stored file changed since it was read: keep what was read
                value.to_parquet(buffer, index=False)
                digest = snapshots.put_bytes(buffer.getvalue())
            out[name] = {"kind": "table", "sha256": str(digest), "version": versions.get(name)}
        return out

    def recipe(self, model: Any, inputs: dict[str, Any], records: dict[str, dict[str, Any] | None],
               versions: dict[str, str]) -> dict[str, Any]:
        """What rebuilds this version (depmesh.tracking.recipe): the code (git commit and diff, else the
        module files by content hash, else the installed distribution holding them), the environment it ran
        in (a PEP 751 pylock.toml), the project's own lock whatever it is, the catalog, seed, parameters and
        input snapshots."""
        import sys

        from depmesh.tracking import environment

        module = self.node.entrypoint.split(":")[0]
        file = module_file(self.node.entrypoint)
        state = code_state(file)
        why: dict[str, str] = {}
        recipe: dict[str, Any] = {"node": self.node.name, "version": model.version, "training_id": self.id,
                                  "seed": self.node.model.seed, "params": dict(self.node.model.params),
                                  "depmesh": environment.depmesh_version(), "python": sys.version.split()[0]}
        env = environment.capture(state.root)
        recipe["environment"] = {"name": "pylock.toml", "sha256": self.tracking.put_blob("environment", env.pylock),
                                 "packages": env.packages, "unhashed": list(env.unhashed)}
        lock = (state.lock_name, state.lock) if state.lock is not None else None
        if state.commit is not None:
            import_root = environment.import_root(module, file)[0] if file else Path(state.root)
            try:
                where = import_root.resolve().relative_to(Path(state.root).resolve()).as_posix()
            except ValueError:
                where = "."
            recipe["code"] = {"kind": "git", "import_path": where}
            recipe.update(commit=state.commit, code_root=state.root)
            if state.diff is not None:
                recipe["diff"] = {"sha256": self.tracking.put_blob("diff", state.diff), "bytes": len(state.diff)}
            else:
                why["diff"] = "; ".join(state.missing)
        elif file and (dist := environment.installed_distribution(module, file)):
            recipe["code"] = {"kind": "distribution", "name": dist[0], "version": dist[1]}
        elif file:
            try:
                tar, files, root = environment.pack_code(module, file)
            except (OSError, ValueError) as exc:
                why["code"] = f"{'; '.join(state.missing)}, and its files could not be recorded: {exc}"
            else:
                recipe["code"] = {"kind": "files", "sha256": self.tracking.put_blob("code", tar), "root": root,
                                  "files": files, "import_path": "."}
                lock = lock or environment.project_lock(Path(root))
        else:
            why["code"] = f"the module of {self.node.entrypoint} has no file to record"
        if lock is not None:
            recipe["lock"] = {"name": lock[0], "sha256": self.tracking.put_blob("lock", lock[1])}
        if self.catalog_path is not None and Path(self.catalog_path).is_file():
            recipe["catalog"] = {"path": str(Path(self.catalog_path).resolve()),
                                 "sha256": self.tracking.put_blob("catalog", Path(self.catalog_path).read_bytes())}
        else:
            why["catalog"] = f"no catalog file at {self.catalog_path}"
        recipe["inputs"] = self.snapshot_inputs(inputs, records, versions)
        if why:
            recipe["why"] = why
        self._recipe = recipe
        return recipe

    # -- the record ------------------------------------------------------------------------
    def record(self, status: str, *, model: Any = None, metrics: dict[str, float] | None = None,
               input_versions: dict[str, str] | None = None, curves: Any = None, error: BaseException | None = None,
               declared_params: dict[str, Any] | None = None) -> str:
        from depmesh.tracking.capture import library_versions

        recipe = self._recipe or {}
        state = None if recipe else code_state(module_file(self.node.entrypoint))
        lock = (recipe.get("lock") or {}).get("sha256")
        diff = (recipe.get("diff") or {}).get("sha256")
        if state is not None:  # a training that was not registered: its code state still goes on record
            lock = self.tracking.put_blob("lock", state.lock) if state.lock is not None else None
            diff = self.tracking.put_blob("diff", state.diff) if state.diff is not None else None
        ended = datetime.now(UTC)
        row = {
            "id": self.id, "node": self.node.name, "status": status, "run_id": self.run_id, "trigger": self.trigger,
            "tags": {**self.tags, "trigger": self.trigger}, "model_version": getattr(model, "version", None) or None,
            "params": estimator_params(getattr(model, "estimator", None)) if model is not None else {},
            "declared_params": dict(declared_params if declared_params is not None else self.node.model.params),
            "seed": self.node.model.seed, "metrics": {k: float(v) for k, v in (metrics or {}).items()},
            "code_version": self.code, "git_commit": recipe.get("commit") or (state.commit if state else None),
            "diff_sha256": diff, "lock_sha256": lock, "catalog_sha256": (recipe.get("catalog") or {}).get("sha256"),
            "library_versions": library_versions(), "input_versions": dict(input_versions or {}),
            "inputs": recipe.get("inputs") or {}, "host": host(), "started_at": self.started_at, "ended_at": ended,
            "duration_s": round(self.seconds, 4), "peak_memory_mb": self.memory.peak_mb,
            "study": self.study, "trial": self.trial,
            "error": "".join(traceback.format_exception_only(type(error), error)).strip()[:4000] if error else None,
        }
        return self.tracking.record(row, curves)


def curves_for(model: Any, ctx: Any) -> Any:
    """The curves a trainer left (``ctx.fit``), else those depmesh can read off
    the fitted estimator on the evaluation window."""
    if getattr(ctx, "curves", None) is not None and ctx.curves.series:
        return ctx.curves
    validation = None
    if ctx.evaluation is not None and model.features:
        frame, y = ctx.evaluation
        try:
            prepared = model.with_upstream_predictions(frame)
            validation = (prepared[model.features], y)
        except Exception:  # noqa: BLE001 - a curve is never worth failing a training for
            validation = None
    try:
        return staged_curves(model.estimator, None, validation)
    except Exception:  # noqa: BLE001
        return None
