"""Feature tables, scoring tables and the operations report of the flights mesh."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from depmesh.models import TrainedModel, split_masks

WEATHER_COLUMNS = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


CONGESTION_COLUMNS = ["origin_delay_1h_before", "origin_delay_2h_before"]


def _origin_congestion(flights: pd.DataFrame) -> pd.DataFrame:
    """Mean departure delay at each origin one and two hours before each
    scheduled hour: delays propagate, and this is known before departure."""
    hourly = flights.groupby(["origin", "time_hour"], sort=True)["dep_delay"].mean().reset_index()
    out = flights[["origin", "time_hour"]].drop_duplicates()
    for lag, column in zip((1, 2), CONGESTION_COLUMNS, strict=True):
        shifted = hourly.assign(time_hour=hourly["time_hour"] + pd.Timedelta(hours=lag))
        out = out.merge(shifted.rename(columns={"dep_delay": column}), on=["origin", "time_hour"], how="left")
    return out


def flight_weather(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    """Each flight joined with the weather at its origin airport and scheduled
    hour, and with the congestion at that origin in the hours before."""
    flights = inputs["raw/flights"]
    weather = inputs["raw/weather"][["origin", "time_hour", *WEATHER_COLUMNS]]
    df = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one")
    df = df.merge(_origin_congestion(flights), on=["origin", "time_hour"], how="left", validate="many_to_one")
    out = pd.DataFrame(
        {
            "flight_id": df["flight_id"],
            "time_hour": df["time_hour"],
            "month": df["month"],
            "weekday": df["time_hour"].dt.tz_convert("America/New_York").dt.day_of_week.astype("int64"),
            "hour": df["hour"],
            "carrier": df["carrier"],
            "origin": df["origin"],
            "dest": df["dest"],
            "tailnum": df["tailnum"],
            "distance": df["distance"].astype("float64"),
            "dep_delay": df["dep_delay"],
            "arr_delay": df["arr_delay"],
            "cancelled": df["dep_time"].isna(),
        }
    )
    for col in [*WEATHER_COLUMNS, *CONGESTION_COLUMNS]:
        out[col] = df[col].astype("float64")
    return out


def aircraft(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    """One row per aircraft: age, size and a coarse manufacturer group."""
    planes = inputs["raw/planes"]
    top = planes["manufacturer"].value_counts().head(int(ctx.params.get("top_manufacturers", 6))).index
    return pd.DataFrame(
        {
            "tailnum": planes["tailnum"],
            "plane_year": planes["year"].astype("float64"),
            "seats": planes["seats"].astype("float64"),
            "engines": planes["engines"].astype("float64"),
            "manufacturer_group": planes["manufacturer"].where(planes["manufacturer"].isin(top), "OTHER"),
        }
    )


def route_stats(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    """Per route (origin, dest): traffic, distance, air time, typical delays and
    the destination's location, computed on flights before ``params.until``
    only, so the evaluation window never leaks into features."""
    flights = inputs["raw/flights"]
    airports = inputs["raw/airports"]
    until = pd.Timestamp(str(ctx.params["until"]), tz="UTC")
    history = flights[flights["time_hour"] < until]
    stats = (
        history.groupby(["origin", "dest"], sort=True)
        .agg(
            route_flights=("flight_id", "size"),
            route_distance=("distance", "mean"),
            route_air_time=("air_time", "mean"),
            route_dep_delay=("dep_delay", "mean"),
            route_arr_delay=("arr_delay", "mean"),
            route_carriers=("carrier", "nunique"),
        )
        .reset_index()
    )
    dest = airports.rename(columns={"faa": "dest", "lat": "dest_lat", "lon": "dest_lon", "alt": "dest_alt"})
    stats = stats.merge(dest[["dest", "dest_lat", "dest_lon", "dest_alt"]], on="dest", how="left")
    float_cols = [c for c in stats.columns if c not in ("origin", "dest", "route_flights", "route_carriers")]
    return stats.astype({c: "float64" for c in float_cols} | {"route_flights": "int64", "route_carriers": "int64"})


def model_frame(inputs: dict[str, Any]) -> pd.DataFrame:
    """The per-flight frame every flights model reads: flight_weather, plus
    aircraft and route statistics where the node has them as inputs."""
    frame = inputs["features/flight_weather"]
    if "features/aircraft" in inputs:
        frame = frame.merge(inputs["features/aircraft"], on="tailnum", how="left", validate="many_to_one")
    if "features/route_stats" in inputs:
        frame = frame.merge(inputs["features/route_stats"], on=["origin", "dest"], how="left", validate="many_to_one")
    return frame


def the_model(inputs: dict[str, Any], node: str) -> TrainedModel:
    models = [v for v in inputs.values() if isinstance(v, TrainedModel)]
    if len(models) != 1:
        raise ValueError(f"node {node}: a scoring node needs exactly one model input, got {len(models)}")
    return models[0]


def score(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    """Predictions for the held-out scoring period (after the evaluation
    window), one row per flight, each carrying the model version that made it."""
    model = the_model(inputs, ctx.node.name)
    frame = model_frame(inputs)
    if model.split is None:
        raise ValueError(f"node {ctx.node.name}: model {model.node} carries no time split to score with")
    _, _, scoring = split_masks(frame, model.split)
    rows = frame[scoring & ~frame["cancelled"]].reset_index(drop=True)
    out = rows[["flight_id", "time_hour", "carrier", "origin", "dest"]].copy()
    out["prediction"] = np.asarray(model.predict(rows), dtype="float64")
    if model.task == "classification":
        out["probability"] = np.asarray(model.predict_proba(rows), dtype="float64")
    if model.target and model.target in rows:
        out["actual"] = model.actual(rows)
    out["model"] = model.node
    out["model_version"] = model.version
    return out


def ops_report(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    """The operations report: per carrier and origin, the predicted departure
    and arrival delays and the predicted share of late arrivals for the
    scoring period, beside what actually happened."""
    dep = inputs["scores/dep_delay"].set_index("flight_id")
    arr = inputs["scores/arr_delay"].set_index("flight_id")
    late = inputs["scores/late_arrival"].set_index("flight_id")
    airlines = inputs["raw/airlines"].rename(columns={"name": "airline"})
    joined = dep[["carrier", "origin"]].copy()
    joined["pred_dep_delay"] = dep["prediction"]
    joined["pred_arr_delay"] = arr["prediction"]
    joined["late_probability"] = late["probability"]
    joined["actual_arr_delay"] = arr.get("actual")
    joined["actually_late"] = late.get("actual")
    report = (
        joined.groupby(["carrier", "origin"], sort=True)
        .agg(
            flights=("pred_dep_delay", "size"),
            pred_dep_delay=("pred_dep_delay", "mean"),
            pred_arr_delay=("pred_arr_delay", "mean"),
            pred_late_share=("late_probability", "mean"),
            actual_arr_delay=("actual_arr_delay", "mean"),
            actual_late_share=("actually_late", "mean"),
        )
        .reset_index()
        .merge(airlines, on="carrier", how="left")
    )
    score_tables = ("scores/dep_delay", "scores/arr_delay", "scores/late_arrival")
    versions = {name: inputs[name]["model_version"].iloc[0] for name in score_tables if len(inputs[name])}
    report["model_versions"] = ", ".join(f"{k.split('/')[-1]}={v}" for k, v in versions.items())
    return report[["carrier", "airline", "origin", "flights", "pred_dep_delay", "pred_arr_delay",
                   "pred_late_share", "actual_arr_delay", "actual_late_share", "model_versions"]]
