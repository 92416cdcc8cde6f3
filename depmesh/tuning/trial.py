"""What a trainer's ``ctx.fit`` does inside a tuning trial: an iterative
estimator (``warm_start`` with ``max_iter`` or ``n_estimators``) is fitted in
steps; after each step the metric on the evaluation rows is reported to the
trial, and the pruner may stop it (optuna.TrialPruned)."""

from __future__ import annotations

from typing import Any

from depmesh.tracking.capture import Curves, _final_step

ITERATION_PARAMS = ("max_iter", "n_estimators")


def step_metric(name: str, estimator: Any, X: Any, y: Any) -> float | None:
    """``name`` on (X, y) for a fitted estimator; None when depmesh cannot compute it by itself."""
    import numpy as np
    from sklearn import metrics

    if name in ("mae", "rmse", "mse", "r2"):
        predicted = estimator.predict(X)
        if name == "mae":
            return float(metrics.mean_absolute_error(y, predicted))
        if name == "r2":
            return float(metrics.r2_score(y, predicted))
        mse = float(metrics.mean_squared_error(y, predicted))
        return mse if name == "mse" else float(np.sqrt(mse))
    if name in ("roc_auc", "log_loss", "brier") and hasattr(estimator, "predict_proba"):
        proba = estimator.predict_proba(X)
        if name == "log_loss":
            return float(metrics.log_loss(y, proba, labels=getattr(estimator, "classes_", None)))
        positive = proba[:, 1] if proba.shape[1] == 2 else None
        if positive is None:
            return None
        return float(metrics.roc_auc_score(y, positive) if name == "roc_auc" else metrics.brier_score_loss(y, positive))
    if name == "accuracy":
        return float(metrics.accuracy_score(y, estimator.predict(X)))
    if name in metrics.get_scorer_names():
        return float(metrics.get_scorer(name)(estimator, X, y))
    return None


class TrialFit:
    def __init__(self, trial: Any, metric: str, steps: int, prunes: bool):
        self.trial, self.metric, self.steps, self.prunes = trial, metric, steps, prunes
        self.curves = Curves()
        self.note = ""

    def fit(self, estimator: Any, X: Any, y: Any, evaluation: tuple[Any, Any] | None) -> None:
        import optuna

        _, final = _final_step(estimator)
        params = final.get_params() if hasattr(final, "get_params") else {}
        iterations = next((p for p in ITERATION_PARAMS if p in params), None)
        if not self.prunes or evaluation is None or iterations is None or "warm_start" not in params:
            self.note = "" if not self.prunes else "fitted in one go: not an iterative estimator with warm_start"
            estimator.fit(X, y)
            return
        total = int(params[iterations])
        steps = max(1, min(self.steps, total))
        done: list[int] = []
        values: list[float] = []
        prep, _ = _final_step(estimator)
        # a pipeline's preprocessing is fitted once; only the iterative last step grows
        X_fit = prep.fit_transform(X, y) if prep is not None else X
        X_eval = prep.transform(evaluation[0]) if prep is not None else evaluation[0]
        final.set_params(warm_start=True)
        try:
            for k in range(1, steps + 1):
                final.set_params(**{iterations: max(1, round(total * k / steps))})
                final.fit(X_fit, y)
                value = step_metric(self.metric, final, X_eval, evaluation[1])
                if value is None:
                    self.note = f"{self.metric} cannot be computed per step: no pruning"
                    final.set_params(**{iterations: total})
                    final.fit(X_fit, y)
                    return
                done.append(int(final.get_params()[iterations]))
                values.append(value)
                self.curves.add(f"validation/{self.metric}", done, values)
                self.trial.report(value, k)
                if self.trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after step {k} of {steps} ({done[-1]} of {total} iterations): "
                                             f"{self.metric} {value:.5g}")
        finally:
            final.set_params(warm_start=False, **{iterations: total})
