"""A rollout's figures from live requests, recorded into the same rollout tables the batch scores fill
(``depmesh.rollout.arms.record``), so the canary's judge and the A/B report count online rows too.

Per rollout, step and model the server adds up what each request saw: rows per arm, the candidate's errors,
each arm's predict time, and, on the rows both arms scored, the prediction shift and disagreement the batch
path computes. Online rows carry no labels, so they add nothing to the metric comparison (the batch path's
labelled rows do). ``flush`` writes one row of figures per model every few seconds and at shutdown.
"""

from __future__ import annotations

import math
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

ONLINE_NODE = "online"  # rollout_metrics.node of figures from live requests


@dataclass
class _Tally:
    mode: str
    percent: float
    key: str
    metric: str
    production_version: str
    candidate_version: str
    tolerance: float = 0.0
    rows: int = 0  # rows answered
    production_rows: int = 0  # rows Production answered for
    production_s: float = 0.0
    exposed: int = 0  # rows routed to the candidate (canary) or scored by it (shadow)
    scored: int = 0
    errors: int = 0
    candidate_s: float = 0.0
    compared: int = 0  # rows both arms scored
    disagree: int = 0
    sum_c: float = 0.0
    sum_p: float = 0.0  # over every production prediction
    sum_p2: float = 0.0
    n_p: int = 0
    error: str | None = None

    def figures(self) -> dict[str, Any]:
        def arm(version: str, rows: int, scored: int, seconds: float, errors: int = 0) -> dict[str, Any]:
            return {"version": version, "rows": rows, "scored": scored, "labelled": 0, "loss_sum": 0.0,
                    "metric": None, "errors": errors, "batch_rows": self.rows, "batch_seconds": seconds}

        mean_p = self.sum_p / self.n_p if self.n_p else 0.0
        var = max(self.sum_p2 / self.n_p - mean_p ** 2, 0.0) if self.n_p else 0.0
        std = math.sqrt(var * self.n_p / (self.n_p - 1)) if self.n_p > 1 and var > 0 else 1.0
        return {
            "mode": self.mode, "percent": self.percent, "key": self.key, "source": "online",
            "production": arm(self.production_version, self.production_rows, self.production_rows, self.production_s),
            "candidate": arm(self.candidate_version, self.exposed, self.scored, self.candidate_s, self.errors),
            "paired": arm(self.production_version, self.compared, self.compared, 0.0),
            "shift": abs(self.sum_c / self.compared - mean_p) / std if self.compared else None,
            "disagreement": self.disagree / self.compared if self.compared else None,
            "latency_ratio": None,  # judged by the batch path's load-independent timing, not by live requests
            "error": self.error, "metric": self.metric, "_losses": {"production": [], "candidate": []}}


class OnlineFigures:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[tuple[int, int, str], _Tally] = {}
        self.run_id = f"online:{socket.gethostname()}:{os.getpid()}"[:64]

    def add(self, arms: Any, model: str, production_version: str, production: Any, production_s: float, *,
            exposed: int,
            candidate: Any = None, paired: Any = None, candidate_s: float = 0.0, error: str | None = None) -> None:
        """One request: Production's predictions for all its rows; the candidate's for the rows it scored and
        Production's on those same rows (``paired``); ``exposed`` rows were routed to the candidate."""
        import numpy as np

        classification = arms.candidates[model].task == "classification"
        key = (arms.id, arms.step, model)
        p = np.asarray(production, dtype="float64")
        with self._lock:
            t = self._tallies.get(key)
            if t is None:
                t = self._tallies[key] = _Tally(arms.mode, arms.percent, arms.key,
                                                "error_rate" if classification else "mae",
                                                production_version=production_version, candidate_version=arms.candidates[model].version,
                                                tolerance=arms.tolerance)
            t.rows += len(p)
            t.production_rows += len(p) - (exposed if arms.mode == "canary" else 0)
            t.production_s += production_s
            t.exposed += exposed
            t.candidate_s += candidate_s
            t.sum_p += float(p.sum())
            t.sum_p2 += float((p ** 2).sum())
            t.n_p += len(p)
            if error is not None:
                t.errors += exposed
                t.error = error
            elif candidate is not None:
                c, q = np.asarray(candidate, dtype="float64"), np.asarray(paired, dtype="float64")
                t.scored += len(c)
                t.compared += len(c)
                t.sum_c += float(c.sum())
                t.disagree += int((np.abs(c - q) > (0 if classification else t.tolerance)).sum())

    def flush(self, registry: Any) -> int:
        """Write what has been added since the last flush; returns the rows written."""
        from depmesh.rollout.arms import record

        with self._lock:
            tallies, self._tallies = self._tallies, {}
        for (rollout_id, step, model), tally in tallies.items():
            if tally.rows:
                record(registry, {"id": rollout_id, "step": step}, ONLINE_NODE, model, self.run_id, tally.figures())
        return len(tallies)
