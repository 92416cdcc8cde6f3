"""The clinic mesh's builders: scikit-learn's bundled diabetes data (442
patients, read from the package's own files; nothing is downloaded), one
regression model feeding a classifier. A second, small domain beside the
flights demo: several meshes share one Dagster instance and one registry."""

from __future__ import annotations

from typing import Any

from depmesh.models import TrainedModel, split_frames, split_masks

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def load_patients(inputs: dict[str, Any], ctx: Any) -> Any:
    """One row per patient; ``visit_date`` orders them (one visit a day from 2020-01-01)."""
    import pandas as pd
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    frame.insert(0, "patient_id", range(1, len(frame) + 1))
    frame.insert(1, "visit_date", pd.date_range("2020-01-01", periods=len(frame), freq="D", tz="UTC"))
    return frame.astype({c: "float64" for c in [*FEATURES, "progression"]})


def patient_features(inputs: dict[str, Any], ctx: Any) -> Any:
    """The patient table with body-mass groups."""
    frame = inputs["raw/patients"].copy()
    frame["bmi_over_30"] = (frame["bmi"] > 30).astype("float64")
    return frame


def _fit(inputs: dict[str, Any], ctx: Any, task: str, features: list[str], positive_above: float | None = None):
    import numpy as np
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    spec = ctx.node.model
    upstream = {name: m for name, m in inputs.items() if isinstance(m, TrainedModel)}
    frame = inputs["features/patients"]
    model = TrainedModel(node=ctx.node.name, task=task, estimator=None, features=features, target=spec.target,
                         prediction_column="pred_" + ctx.node.name.split("/")[-1], upstream=upstream,
                         split=spec.split, positive_above=positive_above)
    train_frame, eval_frame, _ = split_frames(frame, spec.split, inputs)  # any split, a fixed table included

    def labels(prepared: Any) -> Any:
        y = prepared[spec.target].to_numpy(dtype="float64")
        return (y > positive_above).astype("int64") if positive_above is not None else y

    train, evaluate = model.with_upstream_predictions(train_frame), model.with_upstream_predictions(eval_frame)
    y_train, y_eval = labels(train), labels(evaluate)
    estimator = Ridge(**spec.params) if task == "regression" else LogisticRegression(max_iter=1000, **spec.params)
    # missing values are imputed: a malformed row gets a prediction, not a crash (gate_malformed_input)
    model.estimator = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), estimator)
    model.estimator.fit(train[features], y_train)
    model.rows_trained = len(train)
    model.sample_input = eval_frame.head(32)
    ctx.evaluation = (eval_frame, y_eval)
    evaluate = evaluate[features]
    if task == "regression":
        from sklearn.metrics import mean_absolute_error

        median = float(np.median(y_train))
        model.metrics = {"mae": mean_absolute_error(y_eval, model.estimator.predict(evaluate)),
                         "baseline_mae": mean_absolute_error(y_eval, np.full(len(y_eval), median)),
                         "eval_rows": float(len(y_eval))}
    else:
        from sklearn.metrics import roc_auc_score

        model.metrics = {"roc_auc": roc_auc_score(y_eval, model.estimator.predict_proba(evaluate)[:, 1]),
                         "eval_rows": float(len(y_eval))}
    return model


def holdout_patients(inputs: dict[str, Any], ctx: Any) -> Any:
    """Every fifth patient, kept apart as a fixed evaluation table."""
    frame = patient_features(inputs, ctx)
    return frame[frame["patient_id"] % 5 == 0].reset_index(drop=True)


def train_progression(inputs: dict[str, Any], ctx: Any) -> TrainedModel:
    """Disease progression one year on, from the baseline measurements."""
    return _fit(inputs, ctx, "regression", FEATURES)


def train_high_risk(inputs: dict[str, Any], ctx: Any) -> TrainedModel:
    """Whether progression exceeds ``params``' threshold, reading the progression model's prediction."""
    return _fit(inputs, ctx, "classification", [*FEATURES, "bmi_over_30", "pred_progression"], positive_above=140.0)


def score(inputs: dict[str, Any], ctx: Any) -> Any:
    """Risk for the patients after the evaluation window, each row with the model version."""
    import numpy as np

    model = next(v for v in inputs.values() if isinstance(v, TrainedModel))
    frame = inputs["features/patients"]
    _, _, scoring = split_masks(frame, model.split)
    rows = frame[scoring].reset_index(drop=True)
    out = rows[["patient_id", "visit_date"]].copy()
    out["probability"] = np.asarray(model.predict_proba(rows), dtype="float64")
    out["model_version"] = model.version
    return out
