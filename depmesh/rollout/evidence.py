"""The A/B evidence of a rollout and its report.

Every scoring run of a rollout stores each arm's per-row loss on its
labelled rows (absolute error, or 0/1 error for a classifier). Per step, the
runs' losses are pooled and compared: the difference of the arms' mean loss
with a bootstrap confidence interval (scipy.stats.bootstrap, arms resampled
independently), and a decision: better (the whole interval below zero),
worse (above zero), inconclusive. In a canary the arms are different rows (a
hash of the key); in a shadow both arms are every row. The report is one
self-contained HTML page.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from depmesh.rollout.arms import step_figures
from depmesh.rollout.canary import summarize


def ab_test(production: Any, candidate: Any, confidence: float, resamples: int, seed: int) -> dict[str, Any]:
    """Mean loss per arm and the bootstrap interval of (candidate - production); lower loss is better."""
    import numpy as np
    from scipy.stats import bootstrap

    out: dict[str, Any] = {"production_rows": int(len(production)), "candidate_rows": int(len(candidate)),
                           "production_mean": float(np.mean(production)) if len(production) else None,
                           "candidate_mean": float(np.mean(candidate)) if len(candidate) else None,
                           "confidence": confidence, "resamples": resamples}
    if len(production) < 2 or len(candidate) < 2:
        return {**out, "difference": None, "low": None, "high": None, "decision": "inconclusive",
                "why": "fewer than 2 labelled rows in an arm"}
    result = bootstrap((production, candidate), lambda p, c, axis: np.mean(c, axis=axis) - np.mean(p, axis=axis),
                       vectorized=True, paired=False, confidence_level=confidence, n_resamples=resamples,
                       method="percentile", random_state=np.random.default_rng(seed), batch=200)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    decision = "better" if high < 0 else "worse" if low > 0 else "inconclusive"
    return {**out, "difference": out["candidate_mean"] - out["production_mean"], "low": low, "high": high,
            "decision": decision, "why": f"{confidence:.0%} interval of the candidate's mean loss minus Production's"}


def _pooled(tracking: Any, runs: list[dict[str, Any]], arm: str) -> Any:
    import numpy as np

    from depmesh.rollout.arms import unpack_losses

    parts = [unpack_losses(tracking.blob(r["figures"]["losses"][arm]) or b"") for r in runs
             if r["figures"].get("losses", {}).get(arm)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype="float32")


def evidence(registry: Any, mesh: Any, rollout: dict[str, Any]) -> dict[str, Any]:
    """Per model and step: each arm's figures and the A/B test of the step's pooled per-row losses; the model's
    decision is that of the last step with rows in both arms."""
    from depmesh.tracking.store import Tracking

    tracking = Tracking(registry)
    plan = rollout["plan"]
    models = {}
    all_rows = step_figures(registry, rollout["id"])
    for model, arms in sorted(rollout["candidates"].items()):
        consumers = [n.name for n in mesh.nodes if n.kind == "scores" and model in n.inputs]
        entry: dict[str, Any] = {"production": arms["production"], "candidate": arms["candidate"],
                                 "scores": consumers, "steps": []}
        for step in sorted({r["step"] for r in all_rows if r["model"] == model}):
            summary = summarize([r for r in all_rows if r["model"] == model and r["step"] == step])[model]
            percent = 100.0 if rollout["mode"] == "shadow" else plan.steps[step].percent
            entry["steps"].append({"step": step, "percent": percent, **{k: summary[k] for k in (
                "runs", "metric", "metric_regression", "shift", "disagreement", "latency_ratio", "error_rate")},
                "production_rows": summary["production"]["rows"], "candidate_rows": summary["candidate"]["rows"],
                "production_metric": summary["production"]["metric"],
                "candidate_metric": summary["candidate"]["metric"],
                "paired_metric": summary["paired"]["metric"]})
        entry["ab"] = None
        for s in entry["steps"]:
            runs = [r for r in all_rows if r["model"] == model and r["step"] == s["step"]]
            pooled = {arm: _pooled(tracking, runs, arm) for arm in ("production", "candidate")}
            s["ab"] = ab_test(pooled["production"], pooled["candidate"], plan.confidence, plan.bootstrap,
                              rollout["id"] * 1000 + s["step"])
            if s["ab"]["difference"] is not None:
                entry["ab"] = {**s["ab"], "step": s["step"], "percent": s["percent"]}  # the last step with two arms
        models[model] = entry
    return {"rollout": rollout["id"], "release": rollout["release_id"], "mode": rollout["mode"],
            "status": rollout["status"], "step": rollout["step"], "reason": rollout["reason"],
            "steps": [s.percent for s in plan.steps], "models": models}


def _f(value: Any, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def report_markdown(found: dict[str, Any]) -> str:
    lines = [f"**{found['mode']} rollout {found['rollout']}** of release {found['release']}: {found['status']}"
             + (f" — {found['reason']}" if found["reason"] else ""), "",
             "| model | arm versions | latest step | candidate rows | metric on the candidate's rows: prod / cand | "
             "shift | disagreement | latency ratio | A/B (cand - prod, interval) |", "|---|---|---|---|---|---|---|---|---|"]
    for model, m in found["models"].items():
        s = m["steps"][-1] if m["steps"] else {}
        ab = m["ab"] or {}
        lines.append(f"| {model} | {m['production'][:8]} / {m['candidate'][:8]} | {_f(s.get('percent'), 'g')}% | "
                     f"{s.get('candidate_rows', 0)} | {_f(s.get('paired_metric'))} / "
                     f"{_f(s.get('candidate_metric'))} | {_f(s.get('shift'), '.3f')} | "
                     f"{_f(s.get('disagreement'), '.1%')} | {_f(s.get('latency_ratio'), '.2f')} | "
                     + (f"{ab['decision']} at {ab['percent']:g}%: {ab['difference']:+.4g} "
                        f"[{ab['low']:+.4g}, {ab['high']:+.4g}] |" if ab else "- |"))
    return "\n".join(lines)


def report_html(found: dict[str, Any]) -> str:
    """One page: per model the A/B test (interval drawn), and each step's figures per arm (plotly, inlined)."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    sections = []
    for i, (model, m) in enumerate(found["models"].items()):
        fig = go.Figure()
        xs = [f"step {s['step'] + 1} ({s['percent']:g}%)" for s in m["steps"]]
        fig.add_trace(go.Bar(name=f"production {m['production'][:8]}", x=xs,
                             y=[s["production_metric"] for s in m["steps"]]))
        fig.add_trace(go.Bar(name=f"candidate {m['candidate'][:8]}", x=xs,
                             y=[s["candidate_metric"] for s in m["steps"]]))
        metric = m["steps"][0]["metric"] if m["steps"] else "metric"
        fig.update_layout(barmode="group", title=f"{model}: {metric} per arm and step", height=320,
                          margin={"l": 50, "r": 20, "t": 50, "b": 40}, yaxis_title=metric)
        ab = m["ab"]
        if ab and ab["difference"] is not None:
            abtext = (f"<p class='ab {ab['decision']}' data-decision='{ab['decision']}'>A/B at step {ab['step'] + 1} "
                      f"({ab['percent']:g}%) on {ab['production_rows']:,}"
                      f" + {ab['candidate_rows']:,} labelled rows: candidate minus production mean loss "
                      f"<b>{ab['difference']:+.4g}</b>, {ab['confidence']:.0%} interval "
                      f"[{ab['low']:+.4g}, {ab['high']:+.4g}] ({ab['resamples']:,} bootstrap resamples): "
                      f"<b>{ab['decision']}</b></p>")
        else:
            abtext = f"<p class='ab' data-decision='none'>No A/B test: {html.escape((ab or {}).get('why') or 'a shadow keeps Production predictions; see the paired figures')}</p>"
        rows = "".join(
            f"<tr><td>{s['step'] + 1}</td><td>{s['percent']:g}%</td><td>{s['runs']}</td><td>{s['production_rows']:,}</td>"
            f"<td>{s['candidate_rows']:,}</td><td>{_f(s['production_metric'])}</td><td>{_f(s['candidate_metric'])}</td>"
            f"<td>{_f(s['metric_regression'], '+.1%')}</td><td>{_f(s['shift'], '.3f')}</td>"
            f"<td>{_f(s['disagreement'], '.1%')}</td><td>{_f(s['latency_ratio'], '.2f')}</td>"
            f"<td>{_f(s['error_rate'], '.1%')}</td><td class='{s['ab']['decision']}'>{s['ab']['decision']}"
            + (f" {s['ab']['difference']:+.4g} [{s['ab']['low']:+.4g}, {s['ab']['high']:+.4g}]"
               if s["ab"]["difference"] is not None else "") + "</td></tr>" for s in m["steps"])
        sections.append(
            f"<section class='model'><h2>{html.escape(model)}</h2>{abtext}<div id='chart{i}'></div>"
            "<table class='steps'><tr><th>step</th><th>share</th><th>runs</th><th>production rows</th>"
            "<th>candidate rows</th><th>production</th><th>candidate</th><th>regression</th><th>shift</th>"
            "<th>disagreement</th><th>latency ratio</th><th>errors</th><th>A/B: candidate - production</th></tr>"
            f"{rows}</table><script>Plotly.newPlot('chart{i}', {fig.to_json()}.data, {fig.to_json()}.layout);"
            "</script></section>")
    title = f"{found['mode']} rollout {found['rollout']} of release {found['release']}"
    status = html.escape(f"{found['status']}" + (f": {found['reason']}" if found["reason"] else ""))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<script>{get_plotlyjs()}</script><style>body{{font-family:sans-serif;margin:24px}}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            ".better{color:#1a7f37}.worse{color:#c62828}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p id='status'>{status}</p>"
            f"<p>steps: {', '.join(f'{p:g}%' for p in found['steps'])}</p>{''.join(sections)}"
            f"<script type='application/json' id='evidence'>{html.escape(json.dumps(found, default=str))}</script>"
            "</body></html>")


def report_path(storage: Path, release_id: int) -> Path:
    """Where the release's rollout report lives (the release's page and the report asset link it)."""
    return Path(storage) / "reports" / f"release_{release_id}_rollout.html"


def write_report(storage: Path, found: dict[str, Any]) -> Path:
    from depmesh.artifacts import atomic_write

    path = report_path(storage, found["release"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, report_html(found).encode("utf-8"))
    return path
