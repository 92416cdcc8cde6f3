"""Load a catalog file into a validated MeshSpec: the top level here, one parser per section beside it
(parse_node, parse_contract, parse_model, parse_mesh; reader for YAML with lines, fields for shared checks).

Validation collects every problem it can find and raises one CatalogError
that lists them all, each naming the file, the line, the node and the field.
Nothing is returned (and so nothing is registered) when any problem exists.
"""

from __future__ import annotations

from pathlib import Path

from depmesh import graph
from depmesh.catalog.fields import resolve_entrypoint  # noqa: F401 - importable from here as before
from depmesh.catalog.parse_mesh import (
    _parse_dependencies,
    _parse_rollout,
    _parse_serving,
)
from depmesh.catalog.parse_node import _name_duplicates, _parse_node
from depmesh.catalog.reader import (
    CatalogError,
    _Checker,
    _type_name,
    load_yaml,
    read_capped,
)
from depmesh.catalog.spec import (
    MeshSpec,
    NodeSpec,
    ServingSpec,
)

# Dagster 1.13 recurses about once per level when it resolves an asset job,
# so with Python's default recursion limit a chain of ~1,000-2,500 assets fails
# with RecursionError. depmesh.build raises the limit to fit the mesh; loading
# time then grows about quadratically (2,500 levels: 15 s, 5,000: 75 s), so
# deeper meshes are rejected here.
MAX_CHAIN_DEPTH = 5000

TOP_KEYS = {"mesh", "version", "description", "nodes", "rollout", "dependencies", "serving"}


def parse_catalog(text: str, path: Path) -> MeshSpec:
    """Validate catalog ``text`` (read from ``path``) into a MeshSpec."""
    return _parse(text, path)[0]


def _parse(text: str, path: Path) -> tuple[MeshSpec, set[str]]:
    """The MeshSpec, and the modules its entrypoints were imported from."""
    c = _Checker(path)
    data = load_yaml(text, c)
    if not isinstance(data, dict):
        c.add(f"expected a mapping with 'mesh' and 'nodes' at the top, got {_type_name(data)}")
        raise CatalogError(c.problems)
    c.keys(data, TOP_KEYS, node=None, prefix="")
    mesh_name = data.get("mesh")
    if mesh_name is None:
        c.add("missing required key 'mesh' (the mesh's name)", field="mesh", at=data)
    else:
        c.typed(mesh_name, str, "a string", node=None, field="mesh", at=data)
    raw_nodes = data.get("nodes")
    nodes: list[NodeSpec] = []
    if raw_nodes is None:
        c.add("missing required key 'nodes'", field="nodes", at=data)
    elif c.typed(raw_nodes, list, "a list of nodes", node=None, field="nodes", at=data):
        if not raw_nodes:
            c.add("a mesh needs at least one node", field="nodes", at=raw_nodes)
        first_line: dict[str, int | None] = {}
        for i, raw in enumerate(raw_nodes):
            spec = _parse_node(c, raw, i)
            if spec is None:
                continue
            if spec.name in first_line:
                c.add(f"duplicate node name (first declared at line {first_line[spec.name]})",
                      node=spec.name, field="name", at=raw)
                continue
            first_line[spec.name] = spec.line
            nodes.append(spec)
        _name_duplicates(c, raw_nodes)

    known = {n.name for n in nodes}
    for n in nodes:
        for item in n.inputs:
            if item == n.name:
                c.add("a node cannot be its own input", node=n.name, field="inputs", at=n)
            elif item not in known:
                c.add(f"input {item!r} is not declared in this catalog", node=n.name, field="inputs", at=n)
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        for item, edge in n.edges.items():
            producer = by_name.get(item)
            if producer is None:
                continue
            field = f"inputs.{item}"
            if edge.latency_p95_ms is not None and producer.kind != "model":
                c.add(f"a latency budget applies to a model's predictions, and {item} is a {producer.kind}",
                      node=n.name, field=field + ".latency_p95_ms", at=n)
            if producer.kind == "model" and edge.columns:
                c.add(f"{item} is a model, which has no columns to read", node=n.name, field=field + ".columns", at=n)
            outputs = producer.contract.column_names if producer.contract else []
            missing = [col for col in edge.columns if outputs and col not in outputs]
            if missing:
                c.add(f"reads column(s) {', '.join(missing)} that {item} does not output "
                      f"(its contract declares {', '.join(outputs)})", node=n.name, field=field + ".columns", at=n)
    cycle = graph.find_cycle({n.name: [i for i in n.inputs if i != n.name] for n in nodes})
    if cycle:
        c.add("dependency cycle (each feeds the next): " + " -> ".join(reversed(cycle)), node=cycle[0], field="inputs",
              at=next(n for n in nodes if n.name == cycle[0]))
    c.report_missing_modules()
    if not cycle and not c.problems:
        chain = graph.longest_chain_path({n.name: list(n.inputs) for n in nodes})
        if len(chain) > MAX_CHAIN_DEPTH:
            c.add(f"the longest dependency chain has {len(chain):,} nodes ({chain[0]} -> ... -> {chain[-1]}); "
                  f"depmesh accepts at most {MAX_CHAIN_DEPTH:,} (Dagster 1.13 resolves asset graphs recursively and "
                  f"loads a 5,000-level chain in about 75 s): split the mesh into several catalogs (code locations)",
                  node=chain[-1], field="inputs", at=next(n for n in nodes if n.name == chain[-1]))
    rollout = _parse_rollout(c, data["rollout"], nodes) if data.get("rollout") is not None else None
    policy = _parse_dependencies(c, data["dependencies"], path) if data.get("dependencies") is not None else None
    serving = _parse_serving(c, data["serving"]) if data.get("serving") is not None else ServingSpec()
    if c.problems:
        raise CatalogError(c.problems)
    return MeshSpec(
        name=mesh_name, path=path, nodes=tuple(nodes),
        version=str(data.get("version", "1.0.0")), description=str(data.get("description", "")), rollout=rollout,
        dependencies=policy, serving=serving,
    ), c.modules


def load_catalog(path: str | Path) -> MeshSpec:
    """Read and validate the catalog file at ``path``. A catalog validated
    before, unchanged, with unchanged entrypoint modules and depmesh code, comes
    from the compiled-catalog cache (``depmesh.catalog.cache``) instead."""
    from depmesh.catalog import cache

    path = Path(path)
    text = read_capped(path)
    raw = text.encode("utf-8")
    key = cache.key_of(raw, path)
    cached = cache.recall(key, path)
    if cached is not None:
        return cached
    mesh, modules = _parse(text, path)
    cache.remember(key, mesh, modules)
    return mesh
