"""Metrics a catalog declares by scikit-learn scorer name, computed by depmesh
on the model's evaluation window: ``model.metrics: {primary: f1_macro,
direction: higher, also: [accuracy]}``. The primary metric is what the
quality and subgroup gates judge; its baseline for a first version comes from
scikit-learn's dummy estimators scored the same way."""

from __future__ import annotations

from typing import Any


def scorer_names() -> list[str]:
    from sklearn.metrics import get_scorer_names

    return sorted(get_scorer_names())


def higher_is_better(name: str) -> bool:
    """What a scorer returns is always "greater is better": scikit-learn negates
    losses (neg_mean_absolute_error), so the default direction is higher."""
    from sklearn.metrics import get_scorer

    get_scorer(name)  # raises for an unknown name
    return True


def _as_estimator(model: Any) -> Any:
    """A TrainedModel seen as a fitted scikit-learn estimator, so any scorer can call it
    (predictions go through the model, upstream models included)."""
    import numpy as np
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

    if model.task == "classification":
        class Scored(ClassifierMixin, BaseEstimator):
            classes_ = np.asarray(getattr(model.estimator, "classes_", [0, 1]))

            def predict(self, X):  # noqa: N803 - scikit-learn's name
                return self.classes_[np.asarray(self.predict_proba(X)).argmax(axis=1)]

            def predict_proba(self, X):  # noqa: N803
                proba = np.asarray(model.predict_proba(X))
                return np.column_stack([1 - proba, proba]) if proba.ndim == 1 else proba
    else:
        class Scored(RegressorMixin, BaseEstimator):
            def predict(self, X):  # noqa: N803
                return np.asarray(model.predict(X))
    scored = Scored()
    scored.fitted_ = True
    return scored


def score(model: Any, name: str, frame: Any, y: Any) -> float:
    from sklearn.metrics import get_scorer

    return float(get_scorer(name)(_as_estimator(model), frame, y))


def baseline(model: Any, name: str, y: Any) -> float:
    """The scorer on the best constant for these labels: the prior class
    probabilities for a classifier, the median for a regressor."""
    import numpy as np
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.metrics import get_scorer

    dummy = DummyClassifier(strategy="prior") if model.task == "classification" else DummyRegressor(strategy="median")
    features = np.zeros((len(y), 1))
    return float(get_scorer(name)(dummy.fit(features, y), features, y))


def declared_metrics(model: Any, spec: Any, evaluation: tuple[Any, Any] | None) -> dict[str, float]:
    """The catalog's metrics on the evaluation window, and ``baseline_<primary>``."""
    if evaluation is None:
        raise ValueError(f"model {model.node} declares metrics, but its trainer left no evaluation window "
                         "(set ctx.evaluation = (frame, labels))")
    frame, y = evaluation
    out = {name: score(model, name, frame, y) for name in (spec.primary, *spec.also)}
    out[f"baseline_{spec.primary}"] = baseline(model, spec.primary, y)
    return out
