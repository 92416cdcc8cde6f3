"""The model object every trainer returns and every scorer uses.

A TrainedModel carries the exact upstream models it was trained against.
Predicting with it first computes those upstream predictions with the same
upstream versions, so a model can never be served against an upstream
version it did not see in training: the versions that belong together
travel together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from depmesh.catalog.spec import ColumnSplit, RandomSplit, TableSplit

TASKS = ("regression", "classification", "clustering", "custom")

# The metric each task is judged by, and whether higher is better.
PRIMARY_METRIC = {"regression": ("mae", False), "classification": ("roc_auc", True), "clustering": ("silhouette", True)}


def primary_of(model: "TrainedModel") -> tuple[str, bool]:
    """The metric a model is judged by and whether higher is better: the
    catalog's declared one, else its task's default. A ``custom`` task (any
    estimator with ``predict``: a ranker, a forecaster) has no default: its
    catalog entry declares ``model.metrics``."""
    if model.primary_metric:
        return model.primary_metric
    if model.task not in PRIMARY_METRIC:
        raise ValueError(f"model {model.node} is a {model.task!r} task, which has no default metric: declare "
                         "model.metrics (primary: a scikit-learn scorer name) in the catalog")
    return PRIMARY_METRIC[model.task]


class EmptyTrainingData(ValueError):
    """A model was given no rows to train or to evaluate on."""


class InvalidInput(ValueError):
    """A structured refusal: the input frame cannot be scored, and why."""

    def __init__(self, model: str, problems: list[str]):
        self.model, self.problems = model, problems
        super().__init__(f"model {model} cannot score this input: " + "; ".join(problems))


@dataclass
class TrainedModel:
    node: str
    task: str
    estimator: Any
    features: list[str]
    target: str
    prediction_column: str
    upstream: dict[str, TrainedModel] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    rows_trained: int = 0
    split: Any = None  # the TimeSplit it was trained and evaluated on
    positive_above: float | None = None  # classification: the label is target > this
    sample_input: Any = None  # a few raw input rows, for latency measurements and gates
    categorical: list[str] = field(default_factory=list)  # features read as categories (the rest are numbers)
    version: str = ""  # set by the factory once the inputs' versions are known
    primary_metric: tuple[str, bool] | None = None  # (scorer name, higher is better) when the catalog declares one
    serializer: str = "skops"  # how its artifact stores the estimator (the catalog's model.serializer)
    trusted_types: tuple[str, ...] = ()  # extra types its skops file may load

    def output_columns(self) -> list[str]:
        """The columns this model adds to a downstream model's frame: its
        prediction, or for a classifier of three or more classes one
        probability column per class (``<prediction_column>_<class>``)."""
        classes = list(getattr(self.estimator, "classes_", []))
        if self.task == "classification" and len(classes) > 2:
            return [f"{self.prediction_column}_{c}" for c in classes]
        return [self.prediction_column]

    def outputs(self, prepared: Any) -> dict[str, Any]:
        """What this model adds to a downstream frame (see output_columns), from a prepared frame."""
        columns = self.output_columns()
        if columns == [self.prediction_column]:
            return {self.prediction_column: self.predict_prepared(prepared)}
        proba = self.estimator.predict_proba(prepared[self.features])
        return {column: proba[:, i] for i, column in enumerate(columns)}

    def with_upstream_predictions(self, frame: Any) -> Any:
        """``frame`` plus the output columns of each upstream model, in training order."""
        out = frame
        for model in self.upstream.values():
            if any(c not in out.columns for c in model.output_columns()):
                out = model.with_upstream_predictions(out)
                out = out.assign(**model.outputs(out))
        return out

    def predict_prepared(self, frame: Any) -> Any:
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise InvalidInput(self.node, [f"missing feature column(s) {', '.join(missing)}"])
        return self.estimator.predict(frame[self.features])

    def required_columns(self) -> list[str]:
        """The raw columns a frame must hold for this model and its upstream models."""
        produced = {c for m in self.upstream.values() for c in m.output_columns()}
        needed = [c for c in self.features if c not in produced]
        for model in self.upstream.values():
            needed += [c for c in model.required_columns() if c not in needed]
        return needed

    def validate_input(self, frame: Any) -> Any:
        """The frame, cleaned for scoring (infinities read as missing, numbers
        given as text parsed), or an InvalidInput naming every problem."""
        import numpy as np
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            raise InvalidInput(self.node, [f"expected a pandas DataFrame, got {type(frame).__name__}"])
        problems = []
        missing = [c for c in self.required_columns() if c not in frame.columns]
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        categorical = set(self.categorical) | {c for m in self.upstream.values() for c in m.categorical}
        cleaned = {}
        for col in self.required_columns():
            if col in missing or col in categorical:
                continue
            values = frame[col]
            if not pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
                parsed = pd.to_numeric(values, errors="coerce")
                bad = values[parsed.isna() & values.notna()]
                if len(bad):
                    problems.append(f"column {col} holds non-numbers, e.g. {bad.iloc[0]!r}")
                    continue
                values = parsed
            cleaned[col] = values.astype("float64").replace([np.inf, -np.inf], np.nan)
        if problems:
            raise InvalidInput(self.node, problems)
        return frame.assign(**cleaned) if cleaned else frame

    def predict(self, frame: Any) -> Any:
        """Predictions for ``frame`` (which holds the raw feature columns), or InvalidInput."""
        import numpy as np

        frame = self.validate_input(frame)
        if len(frame) == 0:
            return np.empty(0)
        return self.predict_prepared(self.with_upstream_predictions(frame))

    def predict_proba(self, frame: Any) -> Any:
        """P(positive class) per row for a binary classifier; one column per
        class (in ``estimator.classes_`` order) for several classes."""
        import numpy as np

        frame = self.validate_input(frame)
        if len(frame) == 0:
            return np.empty(0)
        prepared = self.with_upstream_predictions(frame)
        proba = self.estimator.predict_proba(prepared[self.features])
        return proba[:, 1] if proba.shape[1] == 2 else proba

    def actual(self, frame: Any) -> Any:
        """The true label or value for ``frame``'s rows (what the model predicts)."""
        values = frame[self.target].astype("float64")
        if self.positive_above is not None:
            return (values > self.positive_above).astype("float64").where(values.notna())
        return values

    def lineage(self) -> dict[str, str]:
        """Every model this one was trained against, transitively -> version."""
        out: dict[str, str] = {}
        for name, model in self.upstream.items():
            out[name] = model.version
            out.update(model.lineage())
        return out


def split_frames(frame: Any, split: Any, inputs: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
    """(train, evaluate, score) frames for any split: masks of ``frame``, or
    for a fixed evaluation table all of ``frame`` to train on and the table
    from ``inputs`` to evaluate on (nothing to score)."""

    if isinstance(split, TableSplit):
        table = (inputs or {}).get(split.evaluate)
        if table is None or len(table) == 0:
            raise EmptyTrainingData(f"the fixed evaluation table {split.evaluate} is missing or empty")
        return frame.reset_index(drop=True), table.reset_index(drop=True), frame.head(0)
    train, evaluate, score = split_masks(frame, split)
    return (frame[train].reset_index(drop=True), frame[evaluate].reset_index(drop=True),
            frame[score].reset_index(drop=True))


def score_table(model: TrainedModel, rows: Any, keep: list[str]) -> Any:
    """A scores table for any task: the ``keep`` columns of ``rows``, then
    ``prediction`` (the value, the cluster or the class); for a binary
    classifier ``probability`` (of the positive class); for three or more
    classes ``probability_<class>`` for each class; and ``model_version``."""
    import numpy as np
    import pandas as pd

    out = rows[keep].reset_index(drop=True).copy()
    classes = list(getattr(model.estimator, "classes_", []))
    if model.task == "classification" and len(classes) > 2:
        proba = np.asarray(model.predict_proba(rows), dtype="float64")
        out["prediction"] = pd.Series(np.asarray(classes, dtype=object)[proba.argmax(axis=1)], dtype="string")
        for i, name in enumerate(classes):
            out[f"probability_{name}"] = proba[:, i]
    else:
        out["prediction"] = np.asarray(model.predict(rows))
        if model.task == "classification":
            out["probability"] = np.asarray(model.predict_proba(rows), dtype="float64")
    out["model_version"] = model.version
    return out


def measure_latency(model: TrainedModel, rows: int = 30, stop_above_ms: float | None = None) -> dict[str, float]:
    """p50/p95/p99 milliseconds of single-row predictions on the model's sample
    input: each call's own time (wall minus the time the thread waited for a
    CPU, on one thread: see depmesh.gates.timing), with the wall-clock p95 and
    the wait share beside it. With ``stop_above_ms``, stops once five calls all
    took longer: the p95 is over that bound whatever follows."""
    from depmesh.gates.timing import Timings, one_thread, time_call

    sample = model.sample_input
    if sample is None or len(sample) == 0:
        raise ValueError(f"model {model.node} carries no sample input to time predictions on")
    timings = Timings()
    with one_thread():
        for i in range(min(rows, len(sample))):
            row = sample.iloc[[i]]
            time_call(lambda r=row: model.predict(r), timings)
            if stop_above_ms is not None and len(timings.own) >= 5 and min(timings.own) > stop_above_ms:
                break
    p50, p95, p99 = timings.percentiles("own")
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "min_ms": min(timings.own),
            "wall_p95_ms": timings.percentiles("wall")[1],
            "wait_share": timings.wait_share, "calls": float(len(timings.own))}


def split_masks(frame: Any, split: Any) -> tuple[Any, Any, Any]:
    """Boolean masks (train, evaluate, score) of ``frame`` for the model's
    split: by time (dates read in the time column's own time zone), a seeded
    random split (a hash of the key column or of the row position, so a row
    stays in its part from run to run), or by a group or holdout column."""
    import numpy as np
    import pandas as pd


    if isinstance(split, TableSplit):
        raise ValueError(f"a fixed evaluation table ({split.evaluate}) splits no frame: use "
                         "depmesh.models.split_frames(frame, split, inputs)")
    if isinstance(split, RandomSplit):
        ids = frame[split.key] if split.key else pd.Series(np.arange(len(frame)), index=frame.index)
        salt = pd.util.hash_pandas_object(pd.Series([split.seed]), index=False).iloc[0]
        draw = (pd.util.hash_pandas_object(ids, index=False).to_numpy() ^ salt) % 1_000_000 / 1_000_000
        evaluate = pd.Series(draw < split.evaluate_share, index=frame.index)
        score = pd.Series((draw >= split.evaluate_share) & (draw < split.evaluate_share + split.score_share),
                          index=frame.index)
        train = ~(evaluate | score)
        windows = ("train", "evaluation")
    elif isinstance(split, ColumnSplit):
        values = frame[split.column]
        evaluate, score = values.isin(split.evaluate), values.isin(split.score)
        train = ~(evaluate | score)
        windows = (f"with {split.column} outside {list(split.evaluate) + list(split.score)}",
                   f"with {split.column} in {list(split.evaluate)}")
    else:
        column = frame[split.time_column]
        tz = getattr(column.dt, "tz", None)
        train_until = pd.Timestamp(split.train_until, tz=tz)
        evaluate_until = pd.Timestamp(split.evaluate_until, tz=tz)
        train = column < train_until
        evaluate = (column >= train_until) & (column < evaluate_until)
        score = column >= evaluate_until
        windows = (f"before {split.train_until} on {split.time_column}",
                   f"in [{split.train_until}, {split.evaluate_until}) on {split.time_column}")
    for mask, window in zip((train, evaluate), windows):
        if not mask.any():
            raise EmptyTrainingData(f"no rows {window} ({len(frame)} rows in all): nothing to train or evaluate "
                                    "on; check the input or model.split")
    return train, evaluate, score
