"""The four flights models. Each trainer takes its inputs (tables and the
upstream models it is trained against) and returns a TrainedModel with its
metrics on the fixed evaluation window. scikit-learn is imported inside the
trainers, so loading the catalog and the Dagster definitions stays light."""

from __future__ import annotations

from typing import Any

import numpy as np

from depmesh.examples.flights.transforms import CONGESTION_COLUMNS, WEATHER_COLUMNS, model_frame
from depmesh.models import TrainedModel, split_masks

CATEGORICAL = ["carrier", "origin", "manufacturer_group"]
NUMERIC = ["hour", "weekday", "distance", *WEATHER_COLUMNS, *CONGESTION_COLUMNS, "plane_year", "seats", "engines"]
ROUTE_NUMERIC = ["route_air_time", "route_dep_delay", "route_arr_delay", "route_flights"]
SEGMENT_FEATURES = ["route_distance", "route_air_time", "route_dep_delay", "route_arr_delay",
                    "route_flights", "dest_lat", "dest_lon"]


def _gradient_boosting(task: str, categorical: list[str], numeric: list[str], params: dict, seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer(
        [
            ("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                          encoded_missing_value=-1), categorical),
            ("numbers", "passthrough", numeric),
        ],
        verbose_feature_names_out=False,
    )
    estimator_cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    settings = {"max_iter": 150, "learning_rate": 0.1, "max_leaf_nodes": 31, **params}
    estimator = estimator_cls(
        categorical_features=list(range(len(categorical))), early_stopping=False, random_state=seed, **settings
    )
    return Pipeline([("encode", encode), ("model", estimator)])


def _regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, baseline: float) -> dict[str, float]:
    """Metrics on the evaluation window; ``baseline_mae`` is the error of the
    best constant (the training median), the floor a model must beat."""
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    return {
        "mae": mean_absolute_error(y_true, y_pred),
        "rmse": root_mean_squared_error(y_true, y_pred),
        "r2": r2_score(y_true, y_pred),
        "baseline_mae": mean_absolute_error(y_true, np.full_like(y_true, baseline, dtype="float64")),
        "eval_rows": float(len(y_true)),
    }


def _train_supervised(
    inputs: dict[str, Any], ctx: Any, *, task: str,
    extra_categorical: list[str] = (), extra_numeric: list[str] = (), positive_above: float | None = None,
) -> TrainedModel:
    spec = ctx.node.model
    upstream = {name: m for name, m in inputs.items() if isinstance(m, TrainedModel)}
    frame = model_frame(inputs)
    frame = frame.assign(_target=frame[spec.target])
    frame = frame[frame["_target"].notna()].reset_index(drop=True)
    train_mask, eval_mask, _ = split_masks(frame, spec.split)
    if not train_mask.any() or not eval_mask.any():
        raise ValueError(
            f"node {ctx.node.name}: the split leaves {int(train_mask.sum())} training and "
            f"{int(eval_mask.sum())} evaluation rows; both must be non-empty"
        )
    model = TrainedModel(
        node=ctx.node.name, task=task, estimator=None, features=[], target=spec.target,
        prediction_column="pred_" + ctx.node.name.split("/")[-1], upstream=upstream, split=spec.split,
        positive_above=positive_above,
    )
    model.sample_input = frame[eval_mask].head(64).drop(columns=["_target"]).reset_index(drop=True)
    prepared = model.with_upstream_predictions(frame)
    categorical = [*CATEGORICAL, *extra_categorical]
    numeric = [*NUMERIC, *extra_numeric]
    model.features = categorical + numeric
    model.categorical = categorical
    model.estimator = _gradient_boosting(task, categorical, numeric, dict(spec.params), spec.seed)
    train, evaluate = prepared[train_mask], prepared[eval_mask]
    y_train = train["_target"].to_numpy()
    if positive_above is not None:
        y_train = (y_train > positive_above).astype("int64")
    y_eval = evaluate["_target"].to_numpy()
    if positive_above is not None:
        y_eval = (y_eval > positive_above).astype("int64")
    # ctx.fit records the per-iteration training and validation loss (and lets a tuning trial prune)
    ctx.fit(model.estimator, train[model.features], y_train, evaluation=(evaluate[model.features], y_eval))
    model.rows_trained = len(train)
    # the fixed evaluation window, raw columns and labels: what the deployment gates score
    ctx.evaluation = (frame[eval_mask].drop(columns=["_target"]).reset_index(drop=True), y_eval)
    if task == "regression":
        model.metrics = _regression_metrics(y_eval, model.estimator.predict(evaluate[model.features]), float(np.median(y_train)))
    else:
        from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score

        proba = model.estimator.predict_proba(evaluate[model.features])[:, 1]
        model.metrics = {
            "roc_auc": roc_auc_score(y_eval, proba),
            "accuracy": accuracy_score(y_eval, proba >= 0.5),
            "brier": brier_score_loss(y_eval, proba),
            "base_rate": float(np.mean(y_eval)),
            "eval_rows": float(len(y_eval)),
        }
    ctx.log.info(f"depmesh: {ctx.node.name} trained on {len(train)} rows: "
                 + ", ".join(f"{k}={v:.4g}" for k, v in model.metrics.items()))
    return model


def train_dep_delay(inputs: dict[str, Any], ctx: Any) -> TrainedModel:
    """Departure delay (minutes) from the weather at the origin, the schedule and the aircraft."""
    return _train_supervised(inputs, ctx, task="regression")


def train_arr_delay(inputs: dict[str, Any], ctx: Any) -> TrainedModel:
    """Arrival delay (minutes), using the departure-delay model's prediction and the route segment."""
    return _train_supervised(
        inputs, ctx, task="regression", extra_categorical=["pred_route_segment"],
        extra_numeric=["pred_dep_delay", *ROUTE_NUMERIC],
    )


def train_late_arrival(inputs: dict[str, Any], ctx: Any) -> TrainedModel:
    """Probability that a flight arrives more than ``params.late_minutes`` late,
    using the arrival-delay model's prediction."""
    late_minutes = float(ctx.node.params.get("late_minutes", 15))
    return _train_supervised(
        inputs, ctx, task="classification", positive_above=late_minutes,
        extra_numeric=["pred_arr_delay", *ROUTE_NUMERIC],
    )


def train_route_segment(inputs: dict[str, Any], ctx: Any) -> TrainedModel:
    """Route segmentation: k-means over route statistics (distance, air time,
    typical delays, traffic, destination location)."""
    from sklearn.cluster import KMeans
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import silhouette_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    spec = ctx.node.model
    routes = inputs["features/route_stats"]
    params = {"n_clusters": 6, "n_init": 10, **spec.params}
    pipeline = Pipeline(
        [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler()),
         ("kmeans", KMeans(random_state=spec.seed, **params))]
    )
    X = routes[SEGMENT_FEATURES]
    labels = pipeline.fit_predict(X)
    transformed = pipeline[:-1].transform(X)
    metrics = {
        "silhouette": float(silhouette_score(transformed, labels)) if len(set(labels)) > 1 else 0.0,
        "inertia": float(pipeline[-1].inertia_),
        "segments": float(len(set(labels))),
        "routes": float(len(routes)),
    }
    ctx.log.info(f"depmesh: {ctx.node.name} segmented {len(routes)} routes: silhouette={metrics['silhouette']:.3f}")
    return TrainedModel(
        node=ctx.node.name, task="clustering", estimator=pipeline, features=list(SEGMENT_FEATURES), target=None,
        prediction_column="pred_route_segment", metrics=metrics, rows_trained=len(routes), split=spec.split,
        sample_input=routes.head(64).reset_index(drop=True),
    )
