"""Trace a prediction back to the raw rows behind it, and raw rows forward to
the model versions and predictions they influenced.

Rows are joined through the ``lineage:`` each node declares in the catalog
(input -> {column here: column there}). Backwards, a score row names the model
version that made it (its ``model_version`` column); the registry gives that
version's training, input data versions and the models it was trained
against; the lineage gives the feature rows and raw rows behind the row.
Forwards, selected rows are followed down the lineage; a model version was
trained on them when its recipe's content-addressed snapshot of that input
holds them inside the training window; every score row a version made, and
every version trained against it, is influenced too. A team so knows what
to retrain after a data error.
"""

from __future__ import annotations

import html
import json
from typing import Any

from depmesh.rollout.production import served_record

SHOWN = 5  # rows shown per node; the count is always complete


class TraceError(ValueError):
    """A trace that cannot be made: an unknown node, a selection that matches nothing, a column missing."""


MAX_SELECTION = 2000


def parse_selection(text: str) -> dict[str, str]:
    """``col=value[,col=value]`` into a mapping; refused when malformed."""
    if len(text) > MAX_SELECTION:
        raise TraceError(f"the selection is {len(text)} characters long; at most {MAX_SELECTION}")
    out: dict[str, str] = {}
    for part in [p for p in text.split(",") if p.strip()]:
        column, sep, value = part.partition("=")
        if not sep or not column.strip():
            raise TraceError(f"expected COLUMN=VALUE[,COLUMN=VALUE], got {text!r}")
        out[column.strip()] = value.strip()
    if not out:
        raise TraceError(f"expected COLUMN=VALUE[,COLUMN=VALUE], got {text!r}")
    return out


def _typed(column: Any, value: Any) -> Any:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        stamp = pd.Timestamp(value)
        tz = getattr(column.dt, "tz", None)
        if tz is not None and stamp.tzinfo is None:
            stamp = stamp.tz_localize("UTC")
        return stamp.tz_convert(tz) if tz is not None else stamp
    if pd.api.types.is_bool_dtype(column):
        return str(value).lower() in ("true", "1", "yes")
    if pd.api.types.is_integer_dtype(column):
        number = float(value)
        if not number.is_integer():  # also inf and nan (1e400 is inf)
            raise ValueError(f"{value} is not a whole number")
        return int(number)
    if pd.api.types.is_float_dtype(column):
        return float(value)
    return str(value)


def match(frame: Any, selection: dict[str, Any], node: str) -> Any:
    """Rows of ``frame`` where every selected column equals its value (typed as the column)."""
    missing = [c for c in selection if c not in frame.columns]
    if missing:
        raise TraceError(f"{node} has no column {', '.join(missing)} (its columns: {', '.join(map(str, frame.columns))})")
    mask = None
    for column, value in selection.items():
        try:
            typed = _typed(frame[column], value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TraceError(f"{node}.{column}: {value!r} is not a {frame[column].dtype} value ({exc})") from None
        hit = frame[column] == typed
        mask = hit if mask is None else mask & hit
    return frame[mask]


def _records(frame: Any, limit: int = SHOWN) -> list[dict[str, Any]]:
    return json.loads(frame.head(limit).to_json(orient="records", date_format="iso"))


class Tables:
    """The stored tables of an instance, each read once and verified against its materialization."""

    def __init__(self, instance: Any):
        from depmesh.assets.io import MeshStore, data_root, recorded_metadata

        self.instance = instance
        self.store = MeshStore(data_root(instance), instance=instance)
        self._recorded = recorded_metadata
        self._cache: dict[str, Any] = {}

    def __call__(self, node: str) -> Any:
        if node not in self._cache:
            try:
                self._cache[node] = self.store.load(node.split("/"), self.instance)
            except FileNotFoundError as exc:
                raise TraceError(str(exc)) from None
        return self._cache[node]

    def version(self, node: str) -> str | None:
        from depmesh.assets.io import DATA_VERSION_KEY

        record = self._recorded(self.instance, node.split("/")) or {}
        return record.get(DATA_VERSION_KEY)


def _behind(mesh: Any, tables: Tables, node: str, rows: Any, depth: int = 0) -> list[dict[str, Any]]:
    """For each input this node declares lineage to: the input's rows joined to ``rows``, and theirs."""
    spec = mesh.node(node)
    traced: dict[str, Any] = {}
    out = []
    for source, columns in spec.lineage.items():
        keys: dict[str, list[Any]] = {}
        for here, there in columns.items():
            if here in rows.columns:
                keys[there] = list(rows[here])
            else:  # a key this node's row lacks: from a row already traced in another input (a join path)
                donor = next((t for t in traced.values() if here in t.columns), None)
                if donor is None:
                    raise TraceError(f"{node}: lineage to {source} needs column {here!r}, which neither its row nor "
                                     f"the rows traced before it ({', '.join(traced) or 'none'}) have")
                keys[there] = list(donor[here].drop_duplicates())
        table = tables(source)
        mask = None
        for there, values in keys.items():
            if there not in table.columns:
                raise TraceError(f"{node}: lineage to {source} joins on {there!r}, which {source} does not have")
            hit = table[there].isin(values)
            mask = hit if mask is None else mask & hit
        found = table[mask] if mask is not None else table.head(0)
        traced[source] = found
        out.append({"node": source, "kind": mesh.node(source).kind, "depth": depth + 1,
                    "on": {k: (v[0] if len(set(map(str, v))) == 1 else f"{len(v)} values") for k, v in keys.items()},
                    "rows": int(len(found)), "shown": _records(found), "data_version": tables.version(source),
                    "behind": _behind(mesh, tables, source, found, depth + 1) if len(found) else []})
    return out


def trace_back(mesh: Any, instance: Any, registry: Any, node: str, selection: dict[str, str]) -> dict[str, Any]:
    """The score row(s) of ``node`` the selection picks, the model version that made each, its training and
    inputs, and the rows behind it down to the raw sources."""
    from depmesh.tracking.store import Tracking

    if node not in mesh.names:
        raise TraceError(f"no node {node!r} in mesh {mesh.name}")
    tables = Tables(instance)
    rows = match(tables(node), selection, node)
    if rows.empty:
        raise TraceError(f"no row of {node} has {', '.join(f'{k}={v}' for k, v in selection.items())}")
    out: dict[str, Any] = {"direction": "back", "node": node, "selection": selection, "rows": int(len(rows)),
                           "shown": _records(rows), "data_version": tables.version(node), "models": [],
                           "served": served_record(instance, node) if mesh.node(node).kind == "scores" else None}
    if "model_version" in rows.columns:
        models = [i for i in mesh.node(node).inputs if mesh.node(i).kind == "model"]
        tracking = Tracking(registry)
        for version in sorted(set(rows["model_version"])):
            model = str(rows.loc[rows["model_version"] == version, "model"].iloc[0]) if "model" in rows else models[0]
            record = registry.version(model, version) or {}
            trainings = [t for t in tracking.query(node=model) if t.get("model_version") == version]
            training = trainings[0] if trainings else None
            out["models"].append({
                "model": model, "version": version, "stage": record.get("stage"),
                "metrics": record.get("metrics"), "input_versions": record.get("input_versions"),
                "trained_against": record.get("upstream_models"), "run_id": record.get("run_id"),
                "training": None if training is None else {
                    "id": training["id"], "status": training["status"], "started_at": str(training["started_at"]),
                    "params": training["declared_params"], "seed": training["seed"],
                    "git_commit": training["git_commit"]},
                "stored_inputs_now": {i: tables.version(i) for i in (record.get("input_versions") or {})
                                      if mesh.node(i).kind != "model"}})
    out["behind"] = _behind(mesh, tables, node, rows)
    return out


def _children(mesh: Any, node: str) -> list[str]:
    return [n.name for n in mesh.nodes if node in n.inputs]


def trace_forward(mesh: Any, instance: Any, registry: Any, node: str, selection: dict[str, str]) -> dict[str, Any]:
    """The rows of ``node`` the selection picks, followed down the lineage; the model versions trained on them
    (their recipe's snapshot holds them in the training window) and those trained against such versions; and the
    score rows those versions made."""
    import pandas as pd

    from depmesh.tracking.snapshots import SnapshotStore

    if node not in mesh.names:
        raise TraceError(f"no node {node!r} in mesh {mesh.name}")
    tables = Tables(instance)
    start = match(tables(node), selection, node)
    if start.empty:
        raise TraceError(f"no row of {node} has {', '.join(f'{k}={v}' for k, v in selection.items())}")
    reached: dict[str, Any] = {node: start}
    keys: dict[str, list[str]] = {node: list(selection)}  # the columns that identify the rows reached in a node
    order = [node]
    for current in order:  # breadth first down the lineage
        for child in _children(mesh, current):
            spec = mesh.node(child)
            columns = spec.lineage.get(current)
            if not columns or spec.kind == "model":
                continue
            table = tables(child)
            if not all(here in table.columns for here in columns):
                continue  # the child's rows lack a key: nothing to follow directly (models and their scores still are)
            parent = reached[current][list(columns.values())].drop_duplicates()
            joined = table.merge(parent.rename(columns={v: k for k, v in columns.items()}), on=list(columns))
            if joined.empty:
                continue
            reached[child] = pd.concat([reached[child], joined]).drop_duplicates() if child in reached else joined
            keys[child] = list(columns)
            if child not in order:
                order.append(child)
    snapshots = SnapshotStore.beside(registry.artifacts.root) if registry.artifacts is not None else None
    affected: dict[str, list[dict[str, Any]]] = {}
    for model in [n for n in mesh.nodes if n.kind == "model"]:
        for source in [i for i in model.inputs if i in reached]:
            for version in registry.versions(model.name):
                found = _trained_on(version, source, reached[source], keys[source], snapshots, model)
                if found:
                    affected.setdefault(model.name, []).append(
                        {"version": version["version"], "stage": version["stage"], "via": source, "rows": found})
    frontier = [(m, v["version"]) for m, vs in affected.items() for v in vs]
    while frontier:  # versions trained against an affected version are affected too
        upstream, up_version = frontier.pop()
        for model in [n for n in mesh.nodes if n.kind == "model" and upstream in n.inputs]:
            for version in registry.versions(model.name):
                if (version.get("upstream_models") or {}).get(upstream) == up_version and not any(
                        v["version"] == version["version"] for v in affected.get(model.name, [])):
                    affected.setdefault(model.name, []).append(
                        {"version": version["version"], "stage": version["stage"],
                         "via": f"{upstream}@{up_version[:12]}", "rows": None})
                    frontier.append((model.name, version["version"]))
    scores = []
    for spec in [n for n in mesh.nodes if n.kind == "scores"]:
        versions = {v["version"] for m in spec.inputs for v in affected.get(m, [])}
        try:
            table = tables(spec.name)
        except TraceError:
            continue
        made = table[table["model_version"].isin(versions)] if "model_version" in table else table.head(0)
        direct = reached.get(spec.name)
        scores.append({"node": spec.name, "made_by_affected_versions": int(len(made)),
                       "joined_to_the_rows": int(len(direct)) if direct is not None else 0,
                       "shown": _records(direct if direct is not None and len(direct) else made)})
    return {"direction": "forward", "node": node, "selection": selection, "rows": int(len(start)),
            "shown": _records(start),
            "reached": [{"node": n, "kind": mesh.node(n).kind, "rows": int(len(reached[n])), "on": keys[n],
                         "shown": _records(reached[n])} for n in order],
            "model_versions": affected, "scores": scores,
            "retrain": sorted(m for m, vs in affected.items() if any(v["stage"] in ("Production", "Staging")
                                                                     for v in vs))}


def _trained_on(version: dict[str, Any], source: str, rows: Any, key: list[str], snapshots: Any,
                model: Any) -> int:
    """How many of ``rows`` the version's recorded snapshot of ``source`` holds inside its training window."""
    import pandas as pd

    from depmesh.artifacts import frame_from_parquet

    recipe = version.get("recipe") or {}
    snap = (recipe.get("inputs") or {}).get(source) or {}
    if snapshots is None or snap.get("kind") != "table" or not snap.get("sha256") or not snapshots.has(snap["sha256"]):
        return 0
    data = frame_from_parquet(snapshots.path_for(snap["sha256"]).read_bytes())
    if not all(k in data.columns for k in key):
        return 0
    held = data.merge(rows[key].drop_duplicates(), on=key)
    split = model.model.split if model.model else None
    column, until = getattr(split, "time_column", None), getattr(split, "train_until", None)
    if column and until is not None and column in held.columns:
        limit = pd.Timestamp(until)
        times = held[column]
        if getattr(times.dt, "tz", None) is not None and limit.tzinfo is None:
            limit = limit.tz_localize("UTC")
        held = held[times < limit]
    return int(len(held))


def served_text(record: dict[str, Any]) -> str:
    """A scores table's serving record (depmesh.rollout.production) in one line: release, status, approvers."""
    if record.get("mode") == "production":
        who = (f"approved by {', '.join(record['approvers'])} at {record.get('approved_at')}" if record.get("approvers")
               else f"promoted by {record.get('promoted_by') or 'unknown'}, no approval required")
        return (f"release {record.get('release_id')} ({record.get('status')}, {who}; Production since "
                f"{record.get('promoted_at')})")
    if record.get("mode") == "candidate":
        return "the gated candidate, NOT APPROVED (no version of it was Production when it was scored)"
    return "what the run trained (serving: latest, not governed by the registry)"


def render_text(found: dict[str, Any]) -> str:
    lines = []
    sel = ", ".join(f"{k}={v}" for k, v in found["selection"].items())
    if found["direction"] == "back":
        lines.append(f"{found['node']} [{sel}]: {found['rows']} row(s), data version {(found['data_version'] or '-')[:12]}")
        for row in found["shown"]:
            lines.append("  " + json.dumps(row, default=str))
        served = found.get("served")
        if served:
            lines.append("served by " + served_text(served))
        for m in found["models"]:
            t = m["training"]
            lines.append(f"made by {m['model']}@{m['version']} ({m['stage']}), run {m['run_id']}")
            lines.append(f"  training: {t['id'] if t else 'not tracked'}"
                         + (f" {t['started_at'][:19]}, params {json.dumps(t['params'])}, seed {t['seed']}, "
                            f"commit {(t['git_commit'] or '-')[:12]}" if t else ""))
            lines.append("  trained on: " + ", ".join(f"{k}@{str(v)[:12]}" for k, v in (m["input_versions"] or {}).items()))
            changed = {k: v for k, v in m["stored_inputs_now"].items() if v != (m["input_versions"] or {}).get(k)}
            if changed:
                lines.append("  stored tables have changed since: " + ", ".join(f"{k} now @{str(v)[:12]}"
                                                                           for k, v in changed.items()))

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                on = ", ".join(f"{k}={v}" for k, v in item["on"].items())
                lines.append(f"{'  ' * item['depth']}<- {item['node']} [{on}]: {item['rows']} row(s)")
                for row in item["shown"][:2]:
                    lines.append(f"{'  ' * item['depth']}   {json.dumps(row, default=str)[:160]}")
                walk(item["behind"])

        walk(found["behind"])
        return "\n".join(lines)
    lines.append(f"{found['node']} [{sel}]: {found['rows']} row(s)")
    for item in found["reached"][1:]:
        lines.append(f"  -> {item['node']}: {item['rows']} row(s) (on {', '.join(item['on'])})")
    for model, versions in found["model_versions"].items():
        for v in versions:
            rows = f"{v['rows']} of the rows in its training window" if v["rows"] else "trained against one"
            lines.append(f"  model {model}@{v['version'][:12]} ({v['stage']}): {rows} (via {v['via']})")
    for s in found["scores"]:
        lines.append(f"  scores {s['node']}: {s['made_by_affected_versions']} rows made by those versions, "
                     f"{s['joined_to_the_rows']} joined to the rows themselves")
    lines.append("retrain: " + (", ".join(found["retrain"]) or "nothing (no Staging or Production version used them)"))
    return "\n".join(lines)


def render_html(found: dict[str, Any]) -> str:
    """The trace as one page: each node reached, its rows, the model versions."""
    import pandas as pd

    def rows_table(rows: list[dict[str, Any]]) -> str:
        return pd.DataFrame(rows).to_html(index=False, classes="rows", border=0) if rows else "<p>no rows</p>"

    parts = [f"<h1>trace {html.escape(found['direction'])}: {html.escape(found['node'])} "
             f"[{html.escape(', '.join(f'{k}={v}' for k, v in found['selection'].items()))}]</h1>",
             f"<section class='node' data-node='{html.escape(found['node'])}' data-rows='{found['rows']}'>"
             + (f"<p class='served'>served by {html.escape(served_text(found['served']))}</p>"
                if found.get("served") else "") +
             f"<h2>{html.escape(found['node'])}: {found['rows']} row(s)</h2>{rows_table(found['shown'])}</section>"]
    if found["direction"] == "back":
        for m in found["models"]:
            parts.append(f"<section class='model' data-version='{html.escape(m['version'])}'><h2>made by "
                         f"{html.escape(m['model'])}@{html.escape(m['version'])} ({html.escape(str(m['stage']))})</h2>"
                         f"<pre>{html.escape(json.dumps(m, indent=2, default=str))}</pre></section>")

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                parts.append(f"<section class='node' data-node='{html.escape(item['node'])}' data-rows='{item['rows']}' "
                             f"style='margin-left:{24 * item['depth']}px'><h3>&larr; {html.escape(item['node'])} "
                             f"[{html.escape(json.dumps(item['on'], default=str))}]: {item['rows']} row(s)</h3>"
                             f"{rows_table(item['shown'])}</section>")
                walk(item["behind"])

        walk(found["behind"])
    else:
        for item in found["reached"][1:]:
            parts.append(f"<section class='node' data-node='{html.escape(item['node'])}' data-rows='{item['rows']}'>"
                         f"<h3>&rarr; {html.escape(item['node'])}: {item['rows']} row(s)</h3>"
                         f"{rows_table(item['shown'])}</section>")
        for model, versions in found["model_versions"].items():
            parts.append(f"<section class='model'><h3>{html.escape(model)}</h3>"
                         f"{pd.DataFrame(versions).to_html(index=False, border=0)}</section>")
        parts.append(f"<section class='scores'>{pd.DataFrame([{k: v for k, v in s.items() if k != 'shown'} for s in found['scores']]).to_html(index=False, border=0)}</section>")
        parts.append(f"<p id='retrain'>retrain: {html.escape(', '.join(found['retrain']) or 'nothing')}</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>depmesh trace</title><style>"
            "body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>" + "".join(parts)
            + f"<script type='application/json' id='trace'>{html.escape(json.dumps(found, default=str))}</script>"
            "</body></html>")
