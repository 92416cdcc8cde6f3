"""Predictions for a checked request frame, as ``TrainedModel.predict`` and ``predict_proba`` give them, with
the per-call overhead of pandas taken out where a pipeline's shape allows.

The request's columns travel as arrays; each model's upstream outputs are added to them as the model's own
``with_upstream_predictions`` adds them to a frame. Two pipeline shapes run on arrays:

- a column transformer of ordinal encoders and passthrough columns, then an estimator: the encoders' fitted
  categories become lookups, the numbers are stacked, the estimator predicts on the array;
- a pipeline over numbers only (an imputer, a scaler, k-means): it is given the stacked array.

Any other model gets a frame of its features, as in the batch. Whether a model may take its array path is
decided once, when its version is loaded: the array path and the model's own ``predict`` (and
``predict_proba``) score the bundle's sample rows, and those rows with every category missing, and must agree
bit for bit; otherwise the frame path serves. The answers are the batch scores' numbers either way (a test
compares them row by row).
"""

from __future__ import annotations

import warnings
from typing import Any


def _passthrough(transformer: Any) -> bool:
    if transformer == "passthrough":
        return True
    return (type(transformer).__name__ == "FunctionTransformer" and getattr(transformer, "func", None) is None
            and getattr(transformer, "inverse_func", None) is None)


def _numbers(columns: dict[str, Any], names: list[str]) -> Any:
    import numpy as np

    return np.column_stack([np.asarray(columns[n], dtype="float64") for n in names])


class _Quiet:
    """A fitted pipeline given an array where it was fitted on a frame (the same columns, in order): its
    answers, without the warning that the array has no column names."""

    def __init__(self, estimator: Any):
        self.estimator = estimator

    def predict(self, X: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self.estimator.predict(X)

    def predict_proba(self, X: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self.estimator.predict_proba(X)


def _compile(model: Any) -> tuple[Any, Any] | None:
    """(columns -> the final step's input array, the final step), or None for another shape."""
    estimator = model.estimator
    steps = getattr(estimator, "steps", None)
    if not steps:
        return None
    if not set(model.categorical) & set(model.features):
        features = list(model.features)
        return (lambda columns: _numbers(columns, features)), _Quiet(estimator)
    if len(steps) != 2:
        return None
    encode, final = steps[0][1], steps[1][1]
    parts = getattr(encode, "transformers_", None)
    if parts is None or getattr(encode, "sparse_output_", False):
        return None
    plan = []
    for name, transformer, names in parts:
        if name == "remainder":
            if transformer != "drop" and len(names):
                return None
            continue
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            return None
        if _passthrough(transformer):
            plan.append((None, names))
        elif type(transformer).__name__ == "OrdinalEncoder" and _lookup(transformer) is not None:
            plan.append((_lookup(transformer), names))
        else:
            return None

    def transform(columns: dict[str, Any]) -> Any:
        import numpy as np

        return np.hstack([_numbers(columns, names) if encode is None else encode(columns, names)
                          for encode, names in plan])

    return transform, final


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _lookup(encoder: Any) -> Any:
    """An OrdinalEncoder's fitted mapping as dictionaries (what it computes per value, without its per-call
    input checks), or None for settings it does not cover (infrequent categories, errors on unknown values)."""
    import numpy as np

    if getattr(encoder, "infrequent_categories_", None) is not None or encoder.handle_unknown != "use_encoded_value":
        return None
    if np.dtype(encoder.dtype) != np.float64:
        return None
    maps = [{(v.item() if hasattr(v, "item") else v): float(i) for i, v in enumerate(categories) if not _missing(v)}
            for categories in encoder.categories_]
    unknown, missing = float(encoder.unknown_value), float(encoder.encoded_missing_value)

    def encode(columns: dict[str, Any], names: list[str]) -> Any:
        return np.column_stack([np.fromiter((missing if _missing(v) else mapping.get(v, unknown)
                                             for v in columns[name]), dtype="float64", count=len(columns[name]))
                                for mapping, name in zip(maps, names)])

    return encode


class Predictor:
    """One loaded model and its upstream models, ready to answer."""

    def __init__(self, model: Any):
        self.model = model
        self.upstream = [Predictor(m) for m in model.upstream.values()]
        self.columns = model.output_columns()
        self.classes = list(getattr(model.estimator, "classes_", []))
        self.fast = _compile(model)
        if self.fast is not None and not self._agrees():
            self.fast = None

    def _sample_frames(self) -> list[Any]:
        sample = self.model.sample_input
        if sample is None or len(sample) == 0:
            return []
        frame = self.model.validate_input(sample)[self.model.required_columns()]
        categorical = [c for c in frame.columns if c in self._categorical()]
        return [frame, frame.assign(**{c: frame[c].where(frame[c].isna()) for c in categorical})]

    def _categorical(self) -> set[str]:
        return set(self.model.categorical) | {c for u in self.upstream for c in u._categorical()}

    def _agrees(self) -> bool:
        """The array path gives the model's own numbers on its sample rows (and with every category missing)."""
        import numpy as np

        frames = self._sample_frames()
        if not frames:
            return False
        try:
            for frame in frames:
                mine = self.answer(frame)
                theirs = {"prediction": self.model.predict(frame)}
                if "probability" in mine or "probabilities" in mine:
                    proba = np.asarray(self.model.predict_proba(frame))
                    mine_p = mine.get("probability")
                    if mine_p is None:
                        mine_p = np.column_stack(list(mine["probabilities"].values()))
                    if not np.array_equal(np.asarray(mine_p), proba, equal_nan=True):
                        return False
                a, b = np.asarray(mine["prediction"]), np.asarray(theirs["prediction"])
                if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                    return False
            return True
        except Exception:  # noqa: BLE001 - a path that cannot even run is not the one to serve with
            return False

    def _features(self, columns: dict[str, Any], dtypes: dict[str, Any]) -> Any:
        """The estimator's input: the array path's array, or a frame of the features with the request's dtypes."""
        import pandas as pd

        if self.fast is not None:
            return self.fast[0](columns)
        return pd.DataFrame({n: (pd.array(columns[n], dtype=dtypes[n]) if n in dtypes else columns[n])
                             for n in self.model.features})

    def _estimator(self) -> Any:
        return self.fast[1] if self.fast is not None else self.model.estimator

    def prepared(self, columns: dict[str, Any], dtypes: dict[str, Any]) -> dict[str, Any]:
        """``columns`` plus each upstream model's output columns (TrainedModel.with_upstream_predictions)."""
        out = columns
        for upstream in self.upstream:
            if any(c not in out for c in upstream.columns):
                out = upstream.prepared(out, dtypes)
                out = {**out, **upstream.outputs(out, dtypes)}
        return out

    def outputs(self, prepared: dict[str, Any], dtypes: dict[str, Any]) -> dict[str, Any]:
        """What this model adds to a downstream frame (TrainedModel.outputs)."""
        if self.columns == [self.model.prediction_column]:
            return {self.model.prediction_column: self._estimator().predict(self._features(prepared, dtypes))}
        proba = self._estimator().predict_proba(self._features(prepared, dtypes))
        return {column: proba[:, i] for i, column in enumerate(self.columns)}

    def answer(self, frame: Any, dtypes: dict[str, Any] | None = None) -> dict[str, Any]:
        """prediction per row of ``frame`` (a frame, or columns as arrays with the ``dtypes`` a frame of them
        takes); for a classifier the probability of the positive class (binary) or of each class."""
        import numpy as np

        if dtypes is None:
            dtypes = {c: frame[c].dtype for c in frame.columns if frame[c].dtype.kind not in "fiub"}
            frame = {c: frame[c].to_numpy() for c in frame.columns}
        columns = self.prepared(frame, dtypes)
        X = self._features(columns, dtypes)
        estimator = self._estimator()
        out: dict[str, Any] = {"prediction": np.asarray(estimator.predict(X))}
        if self.model.task == "classification" and hasattr(estimator, "predict_proba"):
            proba = np.asarray(estimator.predict_proba(X), dtype="float64")
            if proba.shape[1] == 2:
                out["probability"] = proba[:, 1]
            else:
                out["probabilities"] = {str(c): proba[:, i] for i, c in enumerate(self.classes)}
        return out
