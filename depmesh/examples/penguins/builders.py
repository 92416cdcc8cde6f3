"""The penguins mesh: the Palmer penguins (the `palmerpenguins` package ships
the data; nothing is downloaded). A three-class species classifier; a
body-mass regressor that reads the classifier's probability for each
species; a clustering of the bill and flipper measures; species scores with
one probability per class."""

from __future__ import annotations

from typing import Any

from depmesh.models import TrainedModel, split_masks

MEASURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
CATEGORIES = ["island", "sex"]


def load_penguins(inputs: dict[str, Any], ctx: Any) -> Any:
    """The 344 penguins, with a stable id and an observation date to split on:
    the study year, the birds of a year one a day in a fixed shuffled order
    (the file lists them by species, which would put one species in a window)."""
    import pandas as pd
    from palmerpenguins import load_penguins as load

    frame = load().reset_index(drop=True)
    if ctx.sample_fraction < 1:
        frame = frame.iloc[:: max(1, round(1 / ctx.sample_fraction))].reset_index(drop=True)
    frame.insert(0, "penguin_id", range(1, len(frame) + 1))
    order = frame.sample(frac=1.0, random_state=2009).index
    day = frame.loc[order].groupby("year").cumcount().reindex(frame.index)
    frame["observed"] = pd.to_datetime(frame["year"].astype(str) + "-01-01", utc=True) + pd.to_timedelta(day, "D")
    for column in ("species", "island", "sex"):
        frame[column] = frame[column].astype("string")
    return frame.astype({"body_mass_g": "float64", "flipper_length_mm": "float64", "year": "int64"})


def penguin_features(inputs: dict[str, Any], ctx: Any) -> Any:
    """Birds whose species is known, with the bill's shape as a ratio."""
    frame = inputs["raw/penguins"]
    frame = frame[frame["species"].notna()].reset_index(drop=True)
    # scikit-learn's encoders want plain text with a value for "unknown", not pandas' missing marker
    categories = {c: frame[c].astype(object).where(frame[c].notna(), "unknown").astype(str) for c in CATEGORIES}
    return frame.assign(bill_ratio=frame["bill_length_mm"] / frame["bill_depth_mm"], **categories)


def _pipeline(estimator: Any, numeric: list[str], categorical: list[str]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encode = ColumnTransformer([
        ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("categories", make_pipeline(SimpleImputer(strategy="constant", fill_value="unknown"),
                                     OneHotEncoder(handle_unknown="ignore")), categorical),
    ])
    return make_pipeline(encode, estimator)


def _start(inputs: dict[str, Any], ctx: Any, task: str, features: list[str], categorical: list[str]) -> tuple:
    spec = ctx.node.model
    frame = inputs["features/penguins"]
    model = TrainedModel(node=ctx.node.name, task=task, estimator=None, features=features, target=spec.target,
                         prediction_column="pred_" + ctx.node.name.split("/")[-1],
                         upstream={n: m for n, m in inputs.items() if isinstance(m, TrainedModel)},
                         split=spec.split, categorical=categorical)
    train, evaluate, _ = split_masks(frame, spec.split)
    model.sample_input = frame[evaluate].head(32).reset_index(drop=True)
    return model, frame, model.with_upstream_predictions(frame), train, evaluate


def train_species(inputs: dict[str, Any], ctx: Any) -> TrainedModel:
    """Species (Adelie, Chinstrap, Gentoo) from the measures, island and sex."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score

    numeric = [*MEASURES, "bill_ratio", "body_mass_g"]
    model, frame, prepared, train, evaluate = _start(inputs, ctx, "classification", numeric + CATEGORIES, CATEGORIES)
    model.estimator = _pipeline(LogisticRegression(max_iter=2000, random_state=ctx.node.model.seed, **ctx.params),
                                numeric, CATEGORIES)
    labels = prepared[ctx.node.model.target].astype(str)
    model.estimator.fit(prepared.loc[train, model.features], labels[train])
    proba = model.estimator.predict_proba(prepared.loc[evaluate, model.features])
    y_eval = labels[evaluate].to_numpy()
    classes = list(model.estimator.classes_)
    model.metrics = {"roc_auc": float(roc_auc_score(y_eval, proba, multi_class="ovr", labels=classes)),
                     "accuracy": float(accuracy_score(y_eval, np.asarray(classes)[proba.argmax(axis=1)])),
                     "eval_rows": float(len(y_eval))}
    model.rows_trained = int(train.sum())
    ctx.evaluation = (frame[evaluate].reset_index(drop=True), y_eval)
    return model


def train_body_mass(inputs: dict[str, Any], ctx: Any) -> TrainedModel:
    """Body mass (g) from the measures, sex and the species classifier's probability for each species."""
    import numpy as np
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error

    species = inputs["models/species"]
    numeric = [*MEASURES, "bill_ratio", *species.output_columns()]
    model, frame, prepared, train, evaluate = _start(inputs, ctx, "regression", numeric + ["sex"], ["sex"])
    known = prepared[ctx.node.model.target].notna()
    fit, check = train & known, evaluate & known
    model.estimator = _pipeline(Ridge(**ctx.params), numeric, ["sex"])
    y = prepared[ctx.node.model.target].to_numpy(dtype="float64")
    model.estimator.fit(prepared.loc[fit, model.features], y[fit.to_numpy()])
    predicted = model.estimator.predict(prepared.loc[check, model.features])
    median = float(np.median(y[fit.to_numpy()]))
    model.metrics = {"mae": float(mean_absolute_error(y[check.to_numpy()], predicted)),
                     "baseline_mae": float(mean_absolute_error(y[check.to_numpy()], np.full(int(check.sum()), median))),
                     "eval_rows": float(check.sum())}
    model.rows_trained = int(fit.sum())
    ctx.evaluation = (frame[check].reset_index(drop=True), y[check.to_numpy()])
    return model


def train_colonies(inputs: dict[str, Any], ctx: Any) -> TrainedModel:
    """Groups of birds by bill and flipper measures (k-means)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    model, frame, prepared, train, evaluate = _start(inputs, ctx, "clustering", list(MEASURES), [])
    model.estimator = _pipeline(KMeans(random_state=ctx.node.model.seed, n_init=10, **ctx.params), MEASURES, [])
    model.estimator.fit(prepared.loc[train, MEASURES])
    encoded = model.estimator[:-1].transform(prepared.loc[evaluate, MEASURES])
    model.metrics = {"silhouette": float(silhouette_score(encoded, model.estimator.predict(prepared.loc[evaluate, MEASURES]))),
                     "eval_rows": float(evaluate.sum())}
    model.rows_trained = int(train.sum())
    return model


def score_species(inputs: dict[str, Any], ctx: Any) -> Any:
    """For the birds after the evaluation window: the predicted species and one probability per species."""
    from depmesh.models import score_table

    model = inputs["models/species"]
    frame = inputs["features/penguins"]
    _, _, scoring = split_masks(frame, model.split)
    rows = frame[scoring].reset_index(drop=True)
    return score_table(model, rows, ["penguin_id", "observed"]).assign(actual=rows["species"])
