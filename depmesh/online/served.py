"""The set of models a server answers with: every model of the mesh's Production release (and, during a
rollout, its candidates), each loaded from its artifact and verified against the registry's record (its hash,
and the version and node inside the bundle) before the set exists. A set whose models were trained against
upstream versions other than the ones it serves is refused as a whole. Sets are immutable: a swap replaces the
server's one reference, so a request keeps the set it started with."""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depmesh.online.fast import Predictor
from depmesh.online.schema import FeatureSchema, schema_of


class SetRefused(RuntimeError):
    """A release that cannot be served as recorded: nothing of it is served."""


@dataclass(frozen=True)
class ServedModel:
    node: str
    version: str
    artifact_hash: str
    predictor: Predictor
    schema: FeatureSchema
    dtypes: dict[str, Any]
    upstream: dict[str, str]  # every model it was trained against -> version (computed inside each request)

    @property
    def task(self) -> str:
        return self.predictor.model.task


@dataclass(frozen=True)
class Arms:
    """An active rollout, as the server routes it: the same key hash and percent as the batch scores."""

    id: int
    release_id: int
    mode: str  # shadow | canary
    step: int
    percent: float
    key: str
    candidates: dict[str, ServedModel]  # model -> its candidate version
    tolerance: float = 0.0


@dataclass(frozen=True)
class ServedSet:
    mesh: str
    release_id: int | None
    revision: int | None
    models: dict[str, ServedModel]
    rollout: Arms | None = None
    source: str = "registry"
    signature: tuple = ()  # what the registry said when this set was built (the follower compares it)
    loaded_at: float = field(default_factory=time.time)

    def resolve(self, name: str) -> ServedModel | None:
        """A model by its node name, or by its last part when that names one model."""
        if name in self.models:
            return self.models[name]
        matches = [m for n, m in self.models.items() if n.rsplit("/", 1)[-1] == name]
        return matches[0] if len(matches) == 1 else None

    def describe(self) -> dict[str, Any]:
        return {"mesh": self.mesh, "release": self.release_id, "registry_revision": self.revision,
                "source": self.source, "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
                "models": {n: {"version": m.version, "artifact_sha256": m.artifact_hash, "task": m.task,
                               "upstream": m.upstream} for n, m in sorted(self.models.items())},
                "rollout": None if self.rollout is None else {
                    "id": self.rollout.id, "release": self.rollout.release_id, "mode": self.rollout.mode,
                    "step": self.rollout.step, "percent": self.rollout.percent, "key": self.rollout.key,
                    "candidates": {n: m.version for n, m in sorted(self.rollout.candidates.items())}}}


class Loader:
    """Loads verified models, keeping the ones it has loaded (a rollback to a set served before swaps at once).
    A model is kept under its node, version and artifact hash: the same three always mean the same bytes."""

    KEEP = 16

    def __init__(self, mesh: Any = None):
        self.mesh = mesh
        self._cache: dict[tuple[str, str, str], ServedModel] = {}
        self._lock = threading.Lock()

    def model(self, node: str, version: str, digest: str, load: Any) -> ServedModel:
        key = (node, version, digest)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        loaded = load()  # verified by the caller's loader against digest and version
        if getattr(loaded, "node", None) != node:
            raise SetRefused(f"the artifact recorded for {node}@{version} holds {getattr(loaded, 'node', '?')}")
        if getattr(loaded, "version", version) not in ("", version):
            raise SetRefused(f"the artifact recorded for {node}@{version} holds version {loaded.version}")
        served = ServedModel(node, version, digest, Predictor(loaded), schema_of(loaded, self.mesh),
                             loaded.sample_input.dtypes.to_dict() if loaded.sample_input is not None else {},
                             loaded.lineage())
        with self._lock:
            self._cache[key] = served
            while len(self._cache) > self.KEEP:
                self._cache.pop(next(iter(self._cache)))
        return served


@functools.cache
def folder_loader() -> Loader:
    """The one loader of a process serving a bundled release folder: the command line verifies the folder with
    it before it opens a port, and the server in the same process then finds those models loaded."""
    return Loader()


def check_lineage(models: dict[str, ServedModel]) -> None:
    """Every model's upstream versions are the ones the set serves (where the set serves that upstream)."""
    problems = [f"{n}@{m.version} was trained against {u}@{v}, the set serves {u}@{models[u].version}"
                for n, m in sorted(models.items()) for u, v in sorted(m.upstream.items())
                if u in models and models[u].version != v]
    if problems:
        raise SetRefused("the release's models do not belong together: " + "; ".join(problems))


def from_registry(registry: Any, loader: Loader, signature: tuple = ()) -> ServedSet:
    """The mesh's Production set (and an active rollout's candidates), every artifact verified."""
    from depmesh.rollout.serving import active_rollout, percent_now

    state = registry.state()
    production = registry.production()

    def load(node: str, version: str) -> ServedModel:
        row = registry.version(node, version)
        if row is None:
            raise SetRefused(f"{node}@{version} is not registered")
        digest = row["artifact_hash"]
        try:
            return loader.model(node, version, digest, lambda: registry.artifacts.get(digest, version))
        except SetRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to load and verify refuses the whole set
            raise SetRefused(f"{node}@{version}: {type(exc).__name__}: {exc}") from exc

    models = {node: load(node, version) for node, version in sorted(production.items())}
    check_lineage(models)
    rollout, arms = active_rollout(registry), None
    if rollout is not None:
        candidates = {m: load(m, a["candidate"]) for m, a in sorted(rollout["candidates"].items())}
        arms = Arms(rollout["id"], rollout["release_id"], rollout["mode"], rollout["step"], percent_now(rollout),
                    rollout["plan"].key, candidates, rollout["plan"].disagreement_tolerance)
    return ServedSet(registry.mesh, state["production_release_id"], state["revision"], models, arms,
                     signature=signature)


def from_folder(folder: Path, loader: Loader) -> ServedSet:
    """A container's bundled release (release.json and artifacts/), each artifact verified against the
    manifest's hash and version; the request schemas the manifest carries (written with the catalog) win."""
    from depmesh.artifacts import unpack

    manifest = json.loads((folder / "release.json").read_text(encoding="utf-8"))
    models = {}
    for node, member in sorted(manifest["members"].items()):
        path = folder / member["file"]
        try:
            served = loader.model(node, member["version"], member["artifact_sha256"], lambda p=path, m=member, n=node:
                                  unpack(p.read_bytes(), expected_sha=m["artifact_sha256"],
                                         expected_version=m["version"], what=f"{n}@{m['version']}"))
        except SetRefused:
            raise
        except Exception as exc:  # noqa: BLE001
            raise SetRefused(f"{node}@{member['version']}: {type(exc).__name__}: {exc}") from exc
        if member.get("schema"):
            from dataclasses import replace

            served = replace(served, schema=FeatureSchema.from_json(member["schema"]))
        models[node] = served
    check_lineage(models)
    return ServedSet(manifest["mesh"], manifest["release"], None, models, None, source=f"folder {folder}")
