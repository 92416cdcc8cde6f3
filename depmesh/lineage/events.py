"""OpenLineage events of a mesh, built with the official client's classes (openlineage-python, event_v2).

One namespace per mesh (``depmesh://<mesh>``); every node is a job of that name and a dataset of that name,
so a model is a dataset its consumers read and the model-to-model chain is dataset lineage
(``models/dep_delay -> models/arr_delay -> models/late_arrival``). Facets: the schema of a stored table (its
contract's columns and its stored dtypes), column lineage (the columns a node reads, from its features, edge
contracts and row lineage), data-quality assertions (each contract and gate verdict of the materialization),
the job's source code location (the builder's module and the git commit), and depmesh's own facets for a
model (version, metrics, gates) and a scores table (release, versions, approvers).
"""

from __future__ import annotations

import functools
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openlineage.client.event_v2 import InputDataset, Job, JobEvent, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    column_lineage_dataset,
    data_quality_assertions_dataset,
    error_message_run,
    job_type_job,
    parent_run,
    schema_dataset,
    source_code_location_job,
)

from depmesh.lineage.facets import DepmeshModelDatasetFacet, DepmeshServingDatasetFacet

PRODUCER = "https://github.com/depmesh/depmesh/tree/main/depmesh/lineage"
MESH_JOB = "mesh_job"
PREDICTION_COLUMNS = ("prediction", "probability")


def namespace(mesh_name: str) -> str:
    return f"depmesh://{mesh_name}"


def run_uuid(dagster_run_id: str, node: str) -> str:
    """The same OpenLineage run id for a node's START and its end, in one Dagster run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"depmesh:{dagster_run_id}:{node}"))


def _now() -> str:
    return datetime.now(UTC).isoformat()


@functools.lru_cache(maxsize=64)
def _git(folder: str) -> tuple[str | None, str | None]:
    """(commit, remote URL) of the repository holding ``folder``, or Nones outside one."""
    def ask(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() or None if done.returncode == 0 else None

    return ask("rev-parse", "HEAD"), ask("config", "--get", "remote.origin.url")


def source_location(entrypoint: str | None) -> Any:
    """Where the node's builder lives: its module's file and the repository commit."""
    import importlib.util

    if not entrypoint:
        return None
    module = entrypoint.split(":")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin)
    commit, remote = _git(str(path.parent))
    return source_code_location_job.SourceCodeLocationJobFacet(
        type="git" if commit else "file", url=path.as_uri(), repoUrl=remote, path=str(path), version=commit)


def job(mesh_name: str, node: Any) -> Job:
    facets: dict[str, Any] = {"jobType": job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration="DEPMESH", jobType=node.kind.upper())}
    location = source_location(node.entrypoint)
    if location is not None:
        facets["sourceCodeLocation"] = location
    return Job(namespace=namespace(mesh_name), name=node.name, facets=facets)


def schema_facet(node: Any, frame: Any = None, fields: list[str] | None = None) -> Any:
    """The stored table's columns (their stored dtypes, else the contract's), described by the contract."""
    contract = {c.name: c for c in (node.contract.columns if node.contract else ())}
    names = list(frame.columns) if frame is not None else (fields or list(contract))
    if not names:
        return None
    return schema_dataset.SchemaDatasetFacet(fields=[schema_dataset.SchemaDatasetFacetFields(
        name=str(n), type=str(frame[n].dtype) if frame is not None else (
            contract[n].dtype if n in contract else "float64"),
        description=(contract[n].description or None) if n in contract else None) for n in names])


def _columns_of(mesh: Any, name: str) -> set[str]:
    node = mesh.node(name)
    return {c.name for c in node.contract.columns} if node.contract else set()


def column_lineage(mesh: Any, node: Any, outputs: list[str], reads: dict[str, str] | None = None) -> Any:
    """Each output column -> the input fields it comes from. ``reads`` maps a column the node reads to the input
    that provides it (a model's features and its upstream models' predictions); a table's columns come from the
    row lineage the catalog declares, else from an input whose contract (or edge contract) has the column."""
    ns = namespace(mesh.name)
    fields: dict[str, Any] = {}

    def field(source: str, column: str, kind: str, subtype: str) -> Any:
        return column_lineage_dataset.InputField(namespace=ns, name=source, field=column, transformations=[
            column_lineage_dataset.Transformation(type=kind, subtype=subtype)])

    if reads:  # a model: each output reads every feature
        inputs = [field(source, column, "DIRECT", "TRANSFORMATION") for column, source in sorted(reads.items())]
        for out in outputs:
            fields[out] = column_lineage_dataset.Fields(inputFields=inputs)
    else:
        renamed = {own: (source, theirs) for source, mapping in node.lineage.items() for own, theirs in mapping.items()}
        for out in outputs:
            if out in renamed:
                sources = [field(renamed[out][0], renamed[out][1], "DIRECT", "IDENTITY")]
            else:
                sources = [field(name, out, "DIRECT", "IDENTITY") for name in node.inputs
                           if out in _columns_of(mesh, name) or out in node.edges.get(name, _NoEdge).columns]
                if not sources and out in PREDICTION_COLUMNS:
                    sources = [field(name, "*", "DIRECT", "TRANSFORMATION") for name in node.inputs
                               if mesh.node(name).kind == "model"]
            if sources:
                fields[out] = column_lineage_dataset.Fields(inputFields=sources)
    return column_lineage_dataset.ColumnLineageDatasetFacet(fields=fields) if fields else None


class _NoEdge:
    columns: tuple[str, ...] = ()


def model_reads(mesh: Any, node: Any, model: Any) -> dict[str, str]:
    """A trained model's columns -> the input that provides each: an upstream model's predictions, else the
    input table whose contract (or edge contract) declares the column."""
    provided = {c: name for name, up in model.upstream.items() for c in up.output_columns()}
    tables = {n: _columns_of(mesh, n) | set(node.edges.get(n, _NoEdge).columns) for n in node.inputs
              if mesh.node(n).kind != "model"}
    reads = {}
    for column in model.features:
        if column in provided:
            reads[column] = provided[column]
            continue
        source = next((n for n, columns in tables.items() if column in columns), None)
        if source is None and len(tables) == 1:
            source = next(iter(tables))  # one table feeds it: the column is that table's
        if source is not None:
            reads[column] = source
    return reads


def assertions_facet(verdicts: list[tuple[str, bool, str | None]]) -> Any:
    """Every contract and gate verdict of the materialization, passed or failed."""
    if not verdicts:
        return None
    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=[
        data_quality_assertions_dataset.Assertion(assertion=name, success=passed, column=column)
        for name, passed, column in verdicts])


def model_facet(model: Any, gates: dict[str, dict[str, Any]]) -> Any:
    return DepmeshModelDatasetFacet(node=model.node, version=model.version, task=model.task,
                                    metrics={k: float(v) for k, v in model.metrics.items()}, gates=gates,
                                    upstream=model.lineage())


def serving_facet(record: dict[str, Any]) -> Any:
    return DepmeshServingDatasetFacet(mode=record["mode"], versions=dict(record["versions"]),
                                      release=record.get("release_id"), status=record.get("status"),
                                      approvers=list(record.get("approvers") or []),
                                      approved_at=record.get("approved_at"))


def output_dataset(mesh: Any, node: Any, facets: dict[str, Any]) -> OutputDataset:
    return OutputDataset(namespace=namespace(mesh.name), name=node.name,
                         facets={k: v for k, v in facets.items() if v is not None})


def inputs_of(mesh: Any, node: Any) -> list[InputDataset]:
    return [InputDataset(namespace=namespace(mesh.name), name=name) for name in node.inputs]


def run_event(state: str, mesh: Any, node: Any, dagster_run_id: str, *, outputs: list[Any] | None = None,
              error: str | None = None) -> RunEvent:
    facets: dict[str, Any] = {"parent": parent_run.ParentRunFacet(
        run=parent_run.Run(runId=_parent_uuid(dagster_run_id)),
        job=parent_run.Job(namespace=namespace(mesh.name), name=MESH_JOB))}
    if error:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(message=error, programmingLanguage="python")
    return RunEvent(eventType=getattr(RunState, state), eventTime=_now(),
                    run=Run(runId=run_uuid(dagster_run_id, node.name), facets=facets), job=job(mesh.name, node),
                    producer=PRODUCER, inputs=inputs_of(mesh, node), outputs=outputs or [])


def _parent_uuid(dagster_run_id: str) -> str:
    try:
        return str(uuid.UUID(dagster_run_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"depmesh:{dagster_run_id}"))


def static_events(mesh: Any) -> list[JobEvent]:
    """The whole mesh's lineage before anything ran: one job event per node, with its inputs, its output's
    schema (from the contract) and column lineage (from the catalog)."""
    out = []
    for node in mesh.nodes:
        fields = [c.name for c in node.contract.columns] if node.contract else []
        facets = {"schema": schema_facet(node, fields=fields) if fields else None,
                  "columnLineage": column_lineage(mesh, node, fields) if fields else None}
        out.append(JobEvent(eventTime=_now(), job=job(mesh.name, node), producer=PRODUCER,
                            inputs=inputs_of(mesh, node), outputs=[output_dataset(mesh, node, facets)]))
    return out


def to_json(event: Any) -> str:
    from openlineage.client.serde import Serde

    return Serde.to_json(event)

