"""Model cards: one markdown page per registered version."""

from __future__ import annotations

from typing import Any

from depmesh.catalog import NodeSpec


def render_card(node: NodeSpec, model: Any, gates: list[Any], input_versions: dict[str, str]) -> str:
    spec = node.model
    split = spec.split
    lines = [
        f"# Model card: {node.name} @ {model.version}",
        "",
        "## Intended use",
        node.description or "(no description in the catalog)",
        f"Owner: {node.owner.removeprefix('team:')}. Criticality: {node.criticality}. Task: {model.task}"
        + (f", target `{spec.target}`" + (f" > {model.positive_above:g}" if model.positive_above is not None else "")
           if spec.target else "") + ".",
        "",
        "## Training data and window",
        (f"Trained on rows with `{split.time_column}` before {split.train_until} ({model.rows_trained:,} rows); "
         f"evaluated on the fixed window [{split.train_until}, {split.evaluate_until}); scores from "
         f"{split.evaluate_until} on." if hasattr(split, "time_column") else
         f"Split: {split.describe()}; trained on {model.rows_trained:,} rows."),
        "",
        "| input | data version |", "|---|---|",
        *[f"| {name} | `{version}` |" for name, version in sorted(input_versions.items())],
        "",
        "## Metrics on the evaluation window",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in model.metrics.items()],
    ]
    subgroup = next((g for g in gates if g.name == "gate_subgroups"), None)
    if subgroup is not None and subgroup.figures.get("per_group"):
        metric = subgroup.figures["metric"]
        lines += ["", "### Per subgroup", f"| column | group | {metric} | rows |", "|---|---|---|---|"]
        lines += [f"| {r['column']} | {r['group']} | {r[metric]} | {r['rows']} |" for r in subgroup.figures["per_group"]]
    lines += ["", "## Gate results", "| gate | passed | evidence |", "|---|---|---|"]
    lines += [f"| {g.name} | {'yes' if g.passed else 'NO'} | {g.summary} |" for g in gates]
    upstream = model.lineage()
    lines += ["", "## Upstream models it depends on"]
    lines += [f"- {name} @ `{version}`" for name, version in sorted(upstream.items())] or ["- none"]
    lines += [
        "", "## Known limits",
        f"- Judged on one fixed evaluation set ({split.describe()}); behaviour outside the "
        "ranges seen in training is not measured.",
        "- It serves only with the upstream model versions listed above (they are embedded in its artifact).",
        "", "## Rollback procedure",
        "- Whole release: `depmesh release rollback --actor NAME --reason TEXT` makes the previous release "
        "Production again, atomically.",
        f"- This model alone: `depmesh release rollback --node {node.name} --actor NAME --reason TEXT`; refused "
        "while Production models downstream were trained against this version; add `--with-dependents` to move "
        "that rollback set together.",
    ]
    return "\n".join(lines) + "\n"
