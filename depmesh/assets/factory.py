"""The factory: mesh spec -> Dagster software-defined assets.

One function builds every node's asset from its spec; nothing is written per
node by hand. The asset graph's edges are exactly the catalog's inputs.
"""


import inspect
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    AssetsDefinition,
    MetadataValue,
    multi_asset,
)

from depmesh import graph
from depmesh.assets.db_retries import (  # noqa: F401 - importable from here as before
    retry_on_lost_database,
)
from depmesh.assets.declare import (  # noqa: F401 - importable from here as before
    KINDS_TAG,
    argument_name,
    asset_key,
    column_schema,
    freshness_policy,
    node_code_version,
)
from depmesh.assets.run_step import NodeStep
from depmesh.assets.step import (  # noqa: F401 - importable from here as before
    MeshRuntime,
    NodeContext,
    input_version,
)
from depmesh.assets.verdicts import (  # noqa: F401 - importable from here as before
    annotate_verdict,
    check_text,
    gate_results,
    tag_blocked,
    with_failure_modes,
)
from depmesh.catalog import MeshSpec, NodeSpec, resolve_entrypoint
from depmesh.catalog.spec import ServingSpec
from depmesh.contracts.checks import (
    blocking_check_names,
    check_specs,
)
from depmesh.keys import (
    IO_MANAGER_KEY,
    OUTPUT,
    REGISTRY_KEY,
    RUNTIME_KEY,
    TRAINING_POOL,
)
from depmesh.tracking.capture import library_versions  # noqa: F401 - kept under its old name here

NODE_SIGNATURE = inspect.Signature([
    inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=AssetExecutionContext),
    inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD, annotation=Any),
])


def _asset_metadata(node: NodeSpec, impact_row: dict[str, Any] | None) -> dict[str, Any]:
    """The definition metadata of a node's asset: kind, criticality, column schema, contract version, reach."""
    metadata: dict[str, Any] = {"depmesh/kind": node.kind, "depmesh/criticality": node.criticality}
    schema = column_schema(node)
    if schema is not None:
        metadata["dagster/column_schema"] = schema
    if node.contract is not None:
        metadata["depmesh/contract_version"] = node.contract.version
    if impact_row is not None:
        metadata["depmesh/downstream"] = impact_row["downstream"]
        metadata["depmesh/models_downstream"] = impact_row["models_downstream"]
        metadata["depmesh/consumers"] = MetadataValue.json(impact_row["consumer_names"])
        metadata["depmesh/blast_radius"] = impact_row["blast_radius"]
        metadata["depmesh/blast_radius_share"] = impact_row["blast_radius_share"]
    return metadata


def build_asset(node: NodeSpec, impact_row: dict[str, Any] | None = None, builder: Any = None,
                downstream_of: Any = None, catalog_path: Any = None, failure_modes: Any = None,
                serving_spec: Any = None) -> AssetsDefinition:
    """One node -> one Dagster asset, with its contract checks. ``impact_row``
    (from depmesh.impact.impact_table) puts the node's reach in its metadata;
    ``builder`` replaces the catalog's compute or trainer (failure simulation);
    ``downstream_of(name)`` names what lies downstream (told, when blocked, why it did not run);
    ``failure_modes``: the mesh's failure-mode catalogue (a failed check names the modes it may mean);
    ``serving_spec``: the mesh's serving: (which versions a scores node serves; default Production)."""
    serving_spec = serving_spec or ServingSpec()
    builder = builder or resolve_entrypoint(node.entrypoint)
    key = asset_key(node.name)
    specs = check_specs(node, key)
    blocking_checks = blocking_check_names(node)
    blocking = bool(blocking_checks)
    downstream_of = downstream_of or (lambda _name: [])
    code = node_code_version(node)
    ins = {argument_name(name): AssetIn(key=asset_key(name)) for name in node.inputs}
    names = {argument_name(name): name for name in node.inputs}
    tags = {**node.tags, "depmesh/kind": node.kind, "depmesh/criticality": node.criticality}

    step = NodeStep(node, key, builder, code, blocking_checks, names, downstream_of, catalog_path, failure_modes,
                    serving_spec)

    # One asset, declared as a subsettable multi-asset: its check outputs are
    # then optional, so a check that had nothing to judge (the node was
    # blocked before it was built) is recorded by Dagster as skipped, not
    # as failed or missing.
    def _node_asset(context: AssetExecutionContext, **kwargs: Any):
        yield from step.run(context, kwargs)

    # Dagster reads a compute function's signature about fifteen times while
    # building the asset; one signature object, made once, takes that off each
    # node (0.7 s of 15 s on a 10,000-node mesh: benches/scale_bench.py).
    _node_asset.__signature__ = NODE_SIGNATURE

    node_asset = multi_asset(
        name=key.to_python_identifier(),
        outs={OUTPUT: AssetOut(
            key=key, is_required=not blocking, io_manager_key=IO_MANAGER_KEY, group_name=node.group,
            owners=[node.owner], tags=tags, kinds={KINDS_TAG[node.kind]}, description=node.description or None,
            code_version=code, metadata=_asset_metadata(node, impact_row), freshness_policy=freshness_policy(node))},
        ins=ins,
        check_specs=specs or None,
        can_subset=True,
        required_resource_keys={RUNTIME_KEY, REGISTRY_KEY},  # every node: a failed check records an incident
        pool=TRAINING_POOL if node.kind == "model" else None,
    )(_node_asset)
    return node_asset


def build_assets(mesh: MeshSpec, builders: dict[str, Any] | None = None,
                 extra_downstream: Any = None, failure_modes: Any = None) -> list[AssetsDefinition]:
    """Every node's asset. ``extra_downstream(name)``: assets outside the mesh
    graph that lie downstream of ``name`` (the release asset, below every model);
    ``failure_modes``: the mesh's failure-mode catalogue, if it has one."""
    from depmesh.impact import impact_table

    rows = {row["node"]: row for row in impact_table(mesh)}
    builders = builders or {}
    inputs = mesh.inputs_map()

    def downstream_of(name: str) -> list[str]:  # computed only when a node is blocked
        below = sorted(graph.downstream(inputs, name))
        return below + (list(extra_downstream(name, below)) if extra_downstream else [])

    return [build_asset(node, rows[node.name], builders.get(node.name), downstream_of, mesh.path, failure_modes,
                        mesh.serving) for node in mesh.nodes]


__all__ = ["MeshRuntime", "NodeContext", "asset_key", "build_asset", "build_assets"]
