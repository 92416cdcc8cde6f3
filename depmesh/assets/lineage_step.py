"""A node step's OpenLineage events (depmesh.lineage): START when it begins, then COMPLETE with its output
dataset and facets, or FAIL (the step raised, or a blocking verdict kept its output from being stored: the
failed assertions say which), and ABORT for each node downstream in the run that will not run because of it.
Nothing is built unless OpenLineage is configured; nothing here can fail the step."""

from __future__ import annotations

from typing import Any

from dagster import AssetCheckResult, Output

from depmesh.assets.declare import asset_key
from depmesh.keys import SERVING_KEY


def _metadata_value(value: Any) -> Any:
    return getattr(value, "value", getattr(value, "data", value))


class StepLineage:
    def __init__(self, context: Any, node: Any, mesh: Any, sender: Any):
        self.context, self.node, self.mesh, self.sender = context, node, mesh, sender
        self.run_id = context.run.run_id
        self.output: Output | None = None
        self.checks: list[AssetCheckResult] = []

    @classmethod
    def start(cls, context: Any, node: Any, catalog_path: Any) -> StepLineage | None:
        from depmesh.lineage.emit import configured

        if not configured() or catalog_path is None:
            return None
        try:
            from depmesh.catalog import load_catalog
            from depmesh.lineage.emit import client

            step = cls(context, node, load_catalog(catalog_path), client())
            step._send([step._event("START")])
            return step
        except Exception as exc:  # noqa: BLE001 - lineage never fails the step
            context.log.warning(f"depmesh: no OpenLineage events for {node.name}: {type(exc).__name__}: {exc}")
            return None

    def see(self, event: Any) -> None:
        if isinstance(event, Output):
            self.output = event
        elif isinstance(event, AssetCheckResult):
            self.checks.append(event)

    def _event(self, state: str, outputs: list[Any] | None = None, error: str | None = None, node: Any = None) -> Any:
        from depmesh.lineage.events import run_event

        return run_event(state, self.mesh, node or self.node, self.run_id, outputs=outputs, error=error)

    def _send(self, events: list[Any]) -> None:
        from depmesh.lineage.emit import emit

        emit(self.sender, events, self.node.name, self.context.log)

    def finish(self, blocking: frozenset[str], downstream_of: Any) -> None:
        try:
            failed = [c for c in self.checks if not c.passed and c.check_name in blocking]
            dataset = self._dataset()
            if self.output is not None:
                self._send([self._event("COMPLETE", [dataset])])
                return
            why = (f"blocked: {', '.join(c.check_name for c in failed)} failed on {self.node.name}; nothing stored"
                   if failed else f"{self.node.name} stored nothing")
            events = [self._event("FAIL", [dataset], why)]
            selected = self.context.run.asset_selection
            nodes = {n.name for n in self.mesh.nodes}  # (the release and report assets are not mesh nodes)
            for name in downstream_of(self.node.name) if failed else []:
                if name in nodes and (not selected or asset_key(name) in selected):
                    events.append(self._event("ABORT", error=f"not run: blocked upstream by {self.node.name} ({why})",
                                              node=self.mesh.node(name)))
            self._send(events)
        except Exception as exc:  # noqa: BLE001
            self.context.log.warning(f"depmesh: OpenLineage events for {self.node.name} not built: "
                                     f"{type(exc).__name__}: {exc}")

    def fail(self, exc: BaseException) -> None:
        try:
            self._send([self._event("FAIL", error=f"{type(exc).__name__}: {str(exc)[:500]}")])
        except Exception:  # noqa: BLE001
            pass

    def _dataset(self) -> Any:
        from depmesh.lineage import events
        from depmesh.lineage.facets import MODEL_FACET, SERVING_FACET
        from depmesh.models import TrainedModel

        value = self.output.value if self.output is not None else None
        value = getattr(value, "model", value) if type(value).__name__ == "PackedModel" else value
        verdicts = [(c.check_name, bool(c.passed), None) for c in self.checks]
        facets: dict[str, Any] = {"dataQualityAssertions": events.assertions_facet(verdicts)}
        if isinstance(value, TrainedModel):
            gates = {c.check_name: {"passed": bool(c.passed), "summary": c.description or ""}
                     for c in self.checks if c.check_name.startswith("gate_")}
            columns = value.output_columns()
            facets["schema"] = events.schema_facet(self.node, fields=columns) if not self.node.contract else None
            facets["columnLineage"] = events.column_lineage(self.mesh, self.node, columns,
                                                            events.model_reads(self.mesh, self.node, value))
            facets[MODEL_FACET] = events.model_facet(value, gates)
        elif value is not None and hasattr(value, "columns"):
            facets["schema"] = events.schema_facet(self.node, value)
            facets["columnLineage"] = events.column_lineage(self.mesh, self.node, [str(c) for c in value.columns])
            serving = (self.output.metadata or {}).get(SERVING_KEY)
            if serving is not None:
                facets[SERVING_FACET] = events.serving_facet(_metadata_value(serving))
        return events.output_dataset(self.mesh, self.node, facets)
