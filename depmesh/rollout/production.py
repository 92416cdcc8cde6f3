"""Production is what serves: which model versions a scores node scores with.

The catalog's ``serving:`` (depmesh.catalog.spec.ServingSpec) says it per mesh:

- ``production`` (the default): each scores node scores with its models'
  versions in the registry's Production set, loaded from the registry's record
  (the artifact's hash and the version inside the bundle both verified, and the
  bundle must hold that model). A run that trains records a Staging release and
  leaves what is served as it was. While a model has no Production version,
  ``before_first_promotion`` decides: ``skip`` builds no scores and says which
  release to request; ``candidate`` serves the version the run trained (it
  passed its gates), labelled NOT APPROVED.
- ``latest``: the version the run trained, labelled so everywhere.

``plan`` decides before the scores are built; ``verify`` is the scores node's
blocking ``served_set`` check, judged after they are built against the registry
as it is then: a Production set that moved during the step, a row scored by a
version outside the served set, or a served version that is not the registry's
fails it, and the table is not stored.

Every scores materialization records what served it (``SERVING_KEY``): mode,
release, its status, each model's version, who approved it and when, and a
signature. ``stale_scores`` compares that record with the registry: the nodes
whose served versions changed (a promotion, a rollback, a canary step) are
what a re-score materializes again (depmesh.rollout.rescore).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from depmesh import graph
from depmesh.keys import SERVED_BY_KEY, SERVED_CHECK, SERVING_KEY, SIGNATURE_KEY
from depmesh.registry.schema import approvals, promotion_requests, stage_transitions

NOT_APPROVED = "NOT APPROVED"


class ServingError(RuntimeError):
    """A served version that cannot be loaded as its record says: the step fails and names it."""


@dataclass(frozen=True)
class ProductionSet:
    """The registry's Production set of a mesh, and who put it there."""

    versions: dict[str, str]
    release_id: int | None
    status: str | None
    revision: int
    promoted_at: str | None = None  # when it last became Production (a promotion, or the rollback that restored it)
    approvers: tuple[str, ...] = ()
    approved_at: str | None = None
    promoted_by: str | None = None

    def describe(self) -> str:
        if self.release_id is None:
            return "no release is Production"
        who = (f"approved by {', '.join(self.approvers)} at {self.approved_at}" if self.approvers
               else f"promoted by {self.promoted_by or 'unknown'} (no approval required)")
        return f"release {self.release_id} ({self.status}, {who})"


def production_set(registry: Any) -> ProductionSet:
    """The Production versions of the mesh, the release that holds them, its approvers and when."""
    state = registry.state()
    versions = registry.production()
    release_id = state["production_release_id"]
    if release_id is None:
        return ProductionSet(versions, None, None, state["revision"])
    release = registry.release(release_id)
    with registry.engine.connect() as conn:
        request = conn.execute(sa.select(promotion_requests.c.id).where(
            promotion_requests.c.mesh == registry.mesh, promotion_requests.c.release_id == release_id,
            promotion_requests.c.status == "promoted").order_by(promotion_requests.c.id.desc()).limit(1)).scalar()
        decided = conn.execute(sa.select(approvals.c.actor, approvals.c.at).where(
            approvals.c.request_id == request, approvals.c.decision == "approve")
            .order_by(approvals.c.id)).all() if request is not None else []
        # the last move to Production of this release's versions: its promotion, or the rollback that restored it
        last = conn.execute(sa.select(stage_transitions.c.actor, stage_transitions.c.at).where(
            stage_transitions.c.mesh == registry.mesh, stage_transitions.c.release_id == release_id,
            stage_transitions.c.to_stage == "Production").order_by(stage_transitions.c.id.desc()).limit(1)).first()
    return ProductionSet(
        versions, release_id, release["status"], state["revision"],
        promoted_at=_when(last.at if last is not None else release.get("promoted_at")),
        approvers=tuple(dict.fromkeys(a.actor for a in decided)),
        approved_at=_when(max((a.at for a in decided), default=None)),
        promoted_by=last.actor if last is not None else None)


def _when(value: Any) -> str | None:
    return None if value is None else str(value)[:19]


@dataclass
class ServingPlan:
    """What one scores node serves in this step."""

    mode: str  # production | latest | candidate (before the first promotion) | skip
    served: dict[str, str]  # model -> the version served
    inputs: dict[str, Any]  # the step's inputs with the served models in place
    production: ProductionSet | None = None
    reason: str = ""  # skip: why, and what to do
    allowed: set[str] = field(default_factory=set)  # versions a row may carry (a canary adds its candidates)

    @property
    def record(self) -> dict[str, Any]:
        p = self.production
        out: dict[str, Any] = {"mode": self.mode, "versions": dict(sorted(self.served.items()))}
        if self.mode == "production" and p is not None:
            out.update(release_id=p.release_id, status=p.status, approvers=list(p.approvers),
                       approved_at=p.approved_at, promoted_at=p.promoted_at, promoted_by=p.promoted_by,
                       registry_revision=p.revision)
        return out

    def sentence(self, rollout: dict[str, Any] | None = None) -> str:
        versions = ", ".join(f"{m}@{v[:12]}" for m, v in sorted(self.served.items()))
        canary = ""
        if rollout is not None and any(m in rollout["candidates"] for m in self.served):
            from depmesh.rollout.serving import percent_now

            canary = (f"; {rollout['mode']} rollout {rollout['id']} of release {rollout['release_id']} "
                      f"({percent_now(rollout):g}% of rows)" if rollout["mode"] == "canary" else
                      f"; shadow rollout {rollout['id']} of release {rollout['release_id']} scored beside it")
        if self.mode == "production":
            return f"served by {self.production.describe()}: {versions}{canary}"
        if self.mode == "candidate":
            return (f"{NOT_APPROVED}: served by the gated candidate {versions}; no version of it is Production yet "
                    "(serving: before_first_promotion: candidate)")
        if self.mode == "latest":
            return f"latest: served by what the run trained, {versions}, not governed by the registry (serving: latest)"
        return self.reason


def _models_of(inputs: dict[str, Any]) -> dict[str, Any]:
    from depmesh.models import TrainedModel

    return {name: value for name, value in inputs.items() if isinstance(value, TrainedModel)}


_loaded: dict[tuple[str, str], Any] = {}  # (artifact hash, version) -> model: a process loads each version once


def load_served(registry: Any, node: str, version: str) -> Any:
    """``node@version`` from the registry's record: its artifact must hash to the recorded hash, hold that version
    and be that model (a row pointing at another model's valid bundle is refused)."""
    from depmesh.artifacts import ArtifactIntegrityError

    row = registry.version(node, version)
    if row is None:
        raise ServingError(f"{node}@{version} is Production but not registered in mesh {registry.mesh}")
    key = (row["artifact_hash"], version)
    model = _loaded.get(key)
    if model is None:
        try:
            model = registry.artifacts.get(row["artifact_hash"], version)
        except ArtifactIntegrityError as exc:
            raise ServingError(f"refusing to serve {node}@{version}: {exc}") from None
        _loaded[key] = model
    if model.node != node:
        raise ServingError(f"refusing to serve {node}@{version}: its recorded artifact {row['artifact_hash']} holds "
                           f"model {model.node}")
    return model


def plan(registry: Any, serving: Any, node: str, inputs: dict[str, Any], mesh_name: str) -> ServingPlan:
    """The versions ``node`` serves now, and its inputs with them in place."""
    models = _models_of(inputs)
    trained = {name: model.version for name, model in models.items()}
    if serving.mode == "latest":
        return ServingPlan("latest", trained, inputs, allowed=set(trained.values()))
    production = production_set(registry)
    missing = sorted(m for m in models if m not in production.versions)
    if missing:
        if serving.before_first_promotion == "candidate":
            return ServingPlan("candidate", trained, inputs, production, allowed=set(trained.values()))
        return ServingPlan("skip", {}, inputs, production, reason=(
            f"not served: {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no Production version in "
            f"mesh {mesh_name} yet, so {node} builds no scores (serving: before_first_promotion: skip). Promote a "
            "release: depmesh release list, then depmesh release request ID (or release promote ID)"))
    served = {m: production.versions[m] for m in models}
    swapped = {**inputs, **{m: (models[m] if models[m].version == v else load_served(registry, m, v))
                            for m, v in served.items()}}
    return ServingPlan("production", served, swapped, production, allowed=set(served.values()))


def verify(registry: Any, plan_: ServingPlan, frame: Any, rollout: dict[str, Any] | None) -> tuple[bool, str]:
    """The ``served_set`` verdict: (passed, why), judged against the registry now."""
    allowed = set(plan_.allowed)
    if rollout is not None and rollout.get("mode") == "canary":
        allowed |= {arms["candidate"] for m, arms in rollout["candidates"].items() if m in plan_.served}
    if frame is not None and "model_version" in getattr(frame, "columns", ()):
        seen = set(frame["model_version"].dropna().astype(str).unique())
        stray = sorted(seen - allowed)
        if stray:
            return False, (f"rows were scored by {', '.join(v[:12] for v in stray)}, which the declared set "
                           f"({plan_.mode}: {', '.join(sorted(v[:12] for v in allowed))}) does not hold")
    if plan_.mode == "latest":
        return True, plan_.sentence(rollout)
    now = production_set(registry)
    if plan_.mode == "candidate":
        promoted = sorted(m for m in plan_.served if m in now.versions)
        if promoted:
            return False, (f"{', '.join(promoted)} became Production while this step served the candidate: not stored "
                           "(the next re-score serves Production)")
        return True, plan_.sentence(rollout)
    moved = {m: (v, now.versions.get(m)) for m, v in plan_.served.items() if now.versions.get(m) != v}
    if moved:
        return False, ("the served set differs from the registry's Production set: " + "; ".join(
            f"{m} served {v[:12]}, Production is {(p or 'none')[:12]}" for m, (v, p) in sorted(moved.items())))
    return True, plan_.sentence(rollout)


def retire_for_drill(registry: Any, plan_: ServingPlan) -> None:
    """The served-drift drill's fault, on a drill's throwaway registry only: the served models' Production
    versions are archived behind the registry's back, as a competing writer would change the set mid-step."""
    from depmesh.registry.schema import model_versions

    with registry.transaction() as conn:
        for model, version in plan_.served.items():
            conn.execute(model_versions.update().where(
                model_versions.c.mesh == registry.mesh, model_versions.c.node == model,
                model_versions.c.version == version, model_versions.c.stage == "Production").values(stage="Archived"))


def signature(record: dict[str, Any], rollout: dict[str, Any] | None = None) -> str:
    """What a scores node served, as a short digest: the mode, the versions and, in a rollout, its step."""
    parts: dict[str, Any] = {"mode": record["mode"], "versions": record.get("versions", {})}
    if rollout is not None and any(m in rollout["candidates"] for m in record.get("versions", {})):
        parts["rollout"] = [rollout["id"], rollout["mode"], rollout["step"]]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def served_record(instance: Any, node: str) -> dict[str, Any] | None:
    """What the latest materialization of scores node ``node`` recorded as serving it."""
    from depmesh.assets.io import recorded_metadata

    metadata = recorded_metadata(instance, node.split("/"))
    if metadata is None or SERVING_KEY not in metadata:
        return None
    return {**dict(metadata[SERVING_KEY]), "signature": metadata.get(SIGNATURE_KEY)}


def stale_scores(instance: Any, registry: Any, mesh: Any) -> dict[str, str]:
    """Scores node -> why it must be scored again: what its latest materialization served is not what the
    registry (and an active rollout) says it serves now. Empty for a ``latest`` mesh."""
    from depmesh.rollout.serving import active_rollout

    if mesh.serving.mode == "latest":
        return {}
    production = production_set(registry)
    rollout = active_rollout(registry)
    out: dict[str, str] = {}
    for node in mesh.nodes:
        if node.kind != "scores":
            continue
        models = [i for i in node.inputs if mesh.node(i).kind == "model"]
        if not models or any(m not in production.versions for m in models):
            continue  # nothing Production to serve yet: a run builds it (or skips it) as the catalog says
        wanted = {"mode": "production", "versions": {m: production.versions[m] for m in sorted(models)}}
        recorded = served_record(instance, node.name)
        if recorded is None:
            out[node.name] = "never served from the registry"
        elif recorded.get("signature") != signature(wanted, rollout):
            was = ", ".join(f"{m}@{v[:12]}" for m, v in sorted(recorded.get("versions", {}).items()))
            now = ", ".join(f"{m}@{v[:12]}" for m, v in sorted(wanted["versions"].items()))
            out[node.name] = (f"served {recorded.get('mode')} {was}, now production {now}"
                              if was != now or recorded.get("mode") != "production"
                              else f"a rollout started, moved or ended (serving {now})")
    return out


def serving_state(instance: Any, registry: Any, mesh: Any, history: int = 10) -> dict[str, Any]:
    """What serves, for the serving/<mesh> page and `depmesh serving status`: per scores node what its table
    serves and whether that is current, the Production set, what waits in Staging, the history of Production."""
    from depmesh.governance.approvals import list_requests

    production = production_set(registry)
    stale = stale_scores(instance, registry, mesh)
    nodes = []
    for node in mesh.nodes:
        if node.kind != "scores":
            continue
        record = served_record(instance, node.name) or {}
        nodes.append({"node": node.name, "served": record.get("mode", "never served"),
                      "release": record.get("release_id") or "-", "status": record.get("status") or "-",
                      "versions": ", ".join(f"{m}@{v[:12]}" for m, v in sorted(record.get("versions", {}).items())),
                      "approved_by": ", ".join(record.get("approvers", [])) or "-",
                      "current": "yes" if node.name not in stale else f"NO: {stale[node.name]}"})
    waiting = []
    for release in [r for r in registry.releases() if r["status"] == "Staging"][-5:]:
        requests = list_requests(registry, release_id=release["id"])
        last = requests[-1] if requests else None
        waiting.append({"release": release["id"], "created": str(release["created_at"])[:19],
                        "request": f"{last['id']} ({last['status']})" if last else "none",
                        "waiting_for": "; ".join(f"{w['team']} ({', '.join(w['owners'])})"
                                                 for w in (last or {}).get("waiting_for", [])) or "-",
                        "members": ", ".join(f"{m}@{v[:8]}" for m, v in release["members"].items())})
    moves: dict[tuple[Any, str], dict[str, Any]] = {}
    for t in registry.history():
        if t["to_stage"] == "Production":
            entry = moves.setdefault((t["release_id"], str(t["at"])[:16]), {
                "at": str(t["at"])[:19], "release": t["release_id"] or "-", "actor": t["actor"],
                "reason": t["reason"][:80], "models": 0})
            entry["models"] += 1
    return {"mode": mesh.serving.mode, "production": production, "nodes": nodes, "staging": waiting,
            "history": list(moves.values())[-history:][::-1]}


__all__ = ["NOT_APPROVED", "SERVED_BY_KEY", "SERVED_CHECK", "SERVING_KEY", "SIGNATURE_KEY", "ProductionSet",
           "ServingError", "ServingPlan", "load_served", "plan", "production_set", "serving_state", "signature",
           "stale_scores", "verify"]


SERVING_PAGE = "serving/{mesh}"  # the mesh's serving page (depmesh.assets.serving), materialized with a re-score


def selection(mesh: Any, stale: dict[str, str]) -> list[str]:
    """What a re-score materializes (depmesh.rollout.rescore, the serve_production sensor): the stale scores
    nodes and every scores or consumer node downstream of them, in the mesh's order."""

    inputs = mesh.inputs_map()
    wanted = set(stale)
    for name in stale:
        wanted |= {n for n in graph.downstream(inputs, name) if mesh.node(n).kind in ("scores", "consumer")}
    return [n for n in mesh.names if n in wanted]


def rescore_key(mesh: Any, revision: int, stale: dict[str, str]) -> str:
    """The key of a re-score run: the mesh, the registry revision and what was stale (a sensor's run key)."""
    digest = hashlib.sha256(json.dumps(stale, sort_keys=True).encode()).hexdigest()[:12]
    return f"rescore:{mesh.name}:{revision}:{digest}"
