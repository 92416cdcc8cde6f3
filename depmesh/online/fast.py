"""Predictions for a checked request frame, as ``TrainedModel.predict`` and ``predict_proba`` give them, with
the per-call overhead of a pandas column transformer taken out where the pipeline's shape allows.

A pipeline that starts with a fitted ``ColumnTransformer`` of encoders and passthrough columns is run step by
step on arrays (each encoder still gets its own columns as a frame, so categories match as fitted). Whether a
model may use that path is decided once, when its version is loaded: both paths score the bundle's sample rows
and must give the same numbers, bit for bit; otherwise the model's own pipeline serves. The answers are the
batch scores' numbers either way (a test compares them row by row).
"""

from __future__ import annotations

from typing import Any


def _passthrough(transformer: Any) -> bool:
    if transformer == "passthrough":
        return True
    return (type(transformer).__name__ == "FunctionTransformer" and getattr(transformer, "func", None) is None
            and getattr(transformer, "inverse_func", None) is None)


def _compile(estimator: Any) -> Any:
    """A function frame -> the final step's input array, or None when the pipeline has another shape."""
    steps = getattr(estimator, "steps", None)
    if not steps or len(steps) != 2:
        return None
    encode, final = steps[0][1], steps[1][1]
    parts = getattr(encode, "transformers_", None)
    if parts is None or getattr(encode, "sparse_output_", False):
        return None
    plan = []
    for name, transformer, columns in parts:
        if name == "remainder":
            if transformer != "drop" and len(columns):
                return None
            continue
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            return None
        if _passthrough(transformer):
            plan.append((None, columns))
        elif type(transformer).__name__ == "OrdinalEncoder" and _lookup(transformer) is not None:
            plan.append((_lookup(transformer), columns))
        else:
            return None

    def transform(frame: Any) -> Any:
        import numpy as np

        return np.hstack([frame[columns].to_numpy(dtype="float64") if encode is None else encode(frame, columns)
                          for encode, columns in plan])

    return transform, final


def _lookup(encoder: Any) -> Any:
    """An OrdinalEncoder's fitted mapping as dictionaries (what it computes per value, without its per-call
    input checks), or None for settings it does not cover (infrequent categories, errors on unknown values)."""
    import numpy as np

    if getattr(encoder, "infrequent_categories_", None) is not None or encoder.handle_unknown != "use_encoded_value":
        return None
    if np.dtype(encoder.dtype) != np.float64:
        return None
    maps = []
    for categories in encoder.categories_:
        mapping = {}
        for i, value in enumerate(categories):
            if not (value is None or (isinstance(value, float) and np.isnan(value))):
                mapping[value.item() if hasattr(value, "item") else value] = float(i)
        maps.append(mapping)
    unknown, missing = float(encoder.unknown_value), float(encoder.encoded_missing_value)

    def encode(frame: Any, columns: list[str]) -> Any:
        out = np.empty((len(frame), len(columns)), dtype="float64")
        for j, column in enumerate(columns):
            series = frame[column]
            absent = series.isna().to_numpy()
            mapping = maps[j]
            out[:, j] = [missing if a else mapping.get(v, unknown) for v, a in zip(series.tolist(), absent)]
        return out

    return encode


class Predictor:
    """One loaded model and its upstream models, ready to answer."""

    def __init__(self, model: Any):
        self.model = model
        self.upstream = [Predictor(m) for m in model.upstream.values()]
        self.columns = model.output_columns()
        self.classes = list(getattr(model.estimator, "classes_", []))
        compiled = _compile(model.estimator)
        self.fast = compiled if compiled is not None and self._agrees(compiled) else None

    def _agrees(self, compiled: Any) -> bool:
        import numpy as np

        sample = self.model.sample_input
        if sample is None or len(sample) == 0:
            return False
        try:
            prepared = self.model.with_upstream_predictions(self.model.validate_input(sample))
            X = prepared[self.model.features]
            # the sample as it is, and with every categorical value missing (what a null in a request becomes)
            frames = [X, X.assign(**{c: X[c].where(X[c].isna()) for c in self.model.categorical if c in X})]
            transform, final = compiled
            for frame in frames:
                arrays = transform(frame)
                pairs = [(self.model.estimator.predict(frame), final.predict(arrays))]
                if hasattr(final, "predict_proba") and self.model.task == "classification":
                    pairs.append((self.model.estimator.predict_proba(frame), final.predict_proba(arrays)))
                if not all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind == "f")
                           for a, b in pairs):
                    return False
            return True
        except Exception:  # noqa: BLE001 - a path that cannot even run is not the one to serve with
            return False

    def _features(self, frame: Any) -> Any:
        X = frame[self.model.features]
        return self.fast[0](X) if self.fast is not None else X

    def _estimator(self) -> Any:
        return self.fast[1] if self.fast is not None else self.model.estimator

    def prepared(self, frame: Any) -> Any:
        """``frame`` plus each upstream model's output columns (TrainedModel.with_upstream_predictions)."""
        out = frame
        for upstream in self.upstream:
            if any(c not in out.columns for c in upstream.columns):
                out = upstream.prepared(out)
                out = out.assign(**upstream.outputs(out))
        return out

    def outputs(self, prepared: Any) -> dict[str, Any]:
        """What this model adds to a downstream frame (TrainedModel.outputs)."""
        if self.columns == [self.model.prediction_column]:
            return {self.model.prediction_column: self._estimator().predict(self._features(prepared))}
        proba = self._estimator().predict_proba(self._features(prepared))
        return {column: proba[:, i] for i, column in enumerate(self.columns)}

    def answer(self, frame: Any) -> dict[str, Any]:
        """prediction per row; for a classifier the probability of the positive class (binary) or of each class."""
        import numpy as np

        prepared = self.prepared(frame)
        X = self._features(prepared)
        estimator = self._estimator()
        out: dict[str, Any] = {"prediction": np.asarray(estimator.predict(X))}
        if self.model.task == "classification" and hasattr(estimator, "predict_proba"):
            proba = np.asarray(estimator.predict_proba(X), dtype="float64")
            if proba.shape[1] == 2:
                out["probability"] = proba[:, 1]
            else:
                out["probabilities"] = {str(c): proba[:, i] for i, c in enumerate(self.classes)}
        return out
