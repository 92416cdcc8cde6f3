"""Builders for synthetic meshes (benchmarks and scale tests): tiny tables,
so what is measured is depmesh and Dagster, not the work."""

from __future__ import annotations

from typing import Any


def source(inputs: dict[str, Any], ctx: Any) -> Any:
    import pandas as pd

    return pd.DataFrame({"id": range(10), "value": [float(i) for i in range(10)]})


def combine(inputs: dict[str, Any], ctx: Any) -> Any:
    import pandas as pd

    frames = [v for v in inputs.values() if isinstance(v, pd.DataFrame)]
    total = sum(f["value"].sum() for f in frames) if frames else 0.0
    return pd.DataFrame({"id": range(10), "value": [total + i for i in range(10)]})


def train(inputs: dict[str, Any], ctx: Any) -> Any:
    from depmesh.models import TrainedModel

    return TrainedModel(node=ctx.node.name, task="regression", estimator=None, features=[], target="value",
                        prediction_column="pred", split=ctx.node.model.split)
