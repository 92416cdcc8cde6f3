"""Faulty builders the tests swap into the demo mesh: real loaders, then a fault."""

from __future__ import annotations

import numpy as np

from depmesh.examples.flights import sources


def weather_with_nulls(inputs, ctx):
    """30% of the temperatures go missing (the contract allows 1%)."""
    df = sources.load_weather(inputs, ctx)
    rng = np.random.default_rng(0)
    df.loc[rng.random(len(df)) < 0.3, "temp"] = np.nan
    return df


def weather_with_impossible_values(inputs, ctx):
    df = sources.load_weather(inputs, ctx)
    df.loc[df.index[:25], "humid"] = 180.0
    return df


def weather_without_visib(inputs, ctx):
    return sources.load_weather(inputs, ctx).drop(columns=["visib"])


def weather_with_bad_pressure(inputs, ctx):
    """Pressure out of range: the contract marks it WARN, so it reports but does not block."""
    df = sources.load_weather(inputs, ctx)
    df.loc[df.index[:10], "pressure"] = 500.0
    return df


def airlines_reshaped(inputs, ctx):
    """A schema change: one column added, one retyped."""
    df = sources.load_airlines(inputs, ctx)
    df["alliance"] = "none"
    df["name"] = df["name"].astype("category")
    return df


def flights_drifted(inputs, ctx):
    """Departure delays shifted by an hour: the distribution bound must catch it."""
    df = sources.load_flights(inputs, ctx)
    df["dep_delay"] = df["dep_delay"] + 60
    return df


def aircraft_without_seats(inputs, ctx):
    from depmesh.examples.flights.transforms import aircraft

    return aircraft(inputs, ctx).drop(columns=["seats"])


class CrashingEstimator:
    """Crashes (not a structured refusal) on any missing value."""

    def __init__(self, estimator):
        self.estimator = estimator

    def predict(self, X):
        if X.isna().any().any():
            raise RuntimeError("segfault-like crash on a missing value")
        return self.estimator.predict(X.fillna(0))


class HangingEstimator:
    """Never returns on extreme values."""

    def __init__(self, estimator):
        self.estimator = estimator

    def predict(self, X):
        import time

        if (X.select_dtypes("number").abs() > 1e11).any().any():
            time.sleep(3600)
        return self.estimator.predict(X)


def slow_dep_delay(inputs, ctx):
    from depmesh.examples.flights.trainers import train_dep_delay

    model = train_dep_delay(inputs, ctx)
    from depmesh.simulate import DelayedEstimator

    model.estimator = DelayedEstimator(model.estimator, 0.6)
    return model


def crashing_dep_delay(inputs, ctx):
    from depmesh.examples.flights.trainers import train_dep_delay

    model = train_dep_delay(inputs, ctx)
    model.estimator = CrashingEstimator(model.estimator)
    return model


def fail_first_time(inputs, ctx):
    """Fails the first time it runs (a transient fault, say a lost connection),
    succeeds after: the marker file named by DEPMESH_TEST_MARKER remembers."""
    import os
    from pathlib import Path

    marker = Path(os.environ["DEPMESH_TEST_MARKER"])
    if not marker.exists():
        marker.write_text("failed once")
        raise ConnectionError(f"{ctx.node.name}: transient fault (marker {marker} written)")
    frame = next(iter(inputs.values()))
    return frame.assign(value=frame["value"] * 2)


def raising_dep_delay(inputs, ctx):
    raise RuntimeError("the feature store answered 503")


def airlines_worker_lost(inputs, ctx):
    """The step dies as a worker would (the error a lost Celery worker reports)."""
    raise RuntimeError("WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL)")
