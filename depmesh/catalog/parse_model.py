"""The model section of a node: trainer, target, parameters, split, metrics, gates, serializer, tuning space."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from depmesh.catalog.fields import (
    _as_date,
    _check_entrypoint,
    _column_list,
    _number,
    _seconds,
)
from depmesh.catalog.reader import _Checker
from depmesh.catalog.spec import (
    GATE_KEYS,
    SERIALIZERS,
    ColumnSplit,
    GateSpec,
    MetricSpec,
    ModelSpec,
    RandomSplit,
    SearchParam,
    TableSplit,
    TimeSplit,
    TuneSpec,
)
from depmesh.metrics import higher_is_better, scorer_names

MODEL_KEYS = {"trainer", "target", "params", "seed", "split", "schedule", "gates", "serializer", "trusted_types",
              "metrics", "tune"}


TUNE_KEYS = {"space", "metric", "direction", "sampler", "pruner", "trials", "timeout", "steps", "seed"}
SEARCH_KEYS = {"int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"},
               "loguniform": {"type", "low", "high"}, "categorical": {"type", "choices"}}


SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("hyperband", "successive_halving", "median", "none")


# the direction of metrics trainers commonly report (others: tune.direction)
LOWER_IS_BETTER = {"mae", "rmse", "mse", "log_loss", "brier", "inertia", "mape"}
HIGHER_IS_BETTER = {"roc_auc", "accuracy", "r2", "silhouette", "f1", "precision", "recall", "balanced_accuracy"}
METRIC_KEYS = {"primary", "direction", "also"}
SPLIT_KEYS = {"time_column", "train_until", "evaluate_until"}


def _parse_model(c: _Checker, raw: Any, node: str) -> ModelSpec | None:
    if not c.typed(raw, dict, "a mapping", node=node, field="model", at=raw):
        return None
    c.keys(raw, MODEL_KEYS, node=node, prefix="model.")
    ok = True
    for key in ("trainer", "split"):
        if key not in raw:
            c.add(f"missing required key {key!r}", node=node, field=f"model.{key}", at=raw)
            ok = False
    trainer = _check_entrypoint(c, raw["trainer"], node=node, field="model.trainer", at=raw) if "trainer" in raw else None
    target = raw.get("target")
    if target is not None and not c.typed(target, str, "a column name", node=node, field="model.target", at=raw):
        ok = False
    seed = raw.get("seed", 0)
    if not c.typed(seed, int, "a whole number", node=node, field="model.seed", at=raw):
        ok = False
    params = raw.get("params", {})
    if not c.typed(params, dict, "a mapping", node=node, field="model.params", at=raw):
        ok = False
    split = None
    rs = raw.get("split")
    if rs is not None and c.typed(rs, dict, "a mapping", node=node, field="model.split", at=raw):
        split = _parse_split(c, rs, node)
    schedule = raw.get("schedule")
    if schedule is not None:
        from dagster._utils.schedules import is_valid_cron_string

        if not isinstance(schedule, str) or not is_valid_cron_string(schedule):
            c.add(f"{schedule!r} is not a cron schedule like '0 3 * * 1'", node=node, field="model.schedule", at=raw)
            ok = False
    gates = _parse_gates(c, raw.get("gates", {}), node)
    serializer = raw.get("serializer", "skops")
    if serializer not in SERIALIZERS:
        c.add(f"{serializer!r} is not a serializer (use skops, or pickle to opt into code that runs on load)",
              node=node, field="model.serializer", at=raw)
        ok = False
    trusted: tuple[str, ...] | None = ()
    if "trusted_types" in raw:
        trusted = _column_list(c, raw["trusted_types"], node=node, field="model.trusted_types", at=raw)
        ok = ok and trusted is not None
    metrics = None
    if "metrics" in raw:
        metrics = _parse_metrics(c, raw["metrics"], node)
        ok = ok and metrics is not None
    tune = None
    if "tune" in raw:
        tune = _parse_tune(c, raw["tune"], node, metrics, params if isinstance(params, dict) else {})
        ok = ok and tune is not None
    if not (ok and trainer and split and gates):
        return None
    return ModelSpec(trainer=trainer, target=target, split=split, seed=seed, params=dict(params), schedule=schedule,
                     gates=gates, serializer=serializer, trusted_types=tuple(trusted), metrics=metrics, tune=tune)


def _parse_search_param(c: _Checker, name: Any, raw: Any, node: str, sampler: Any) -> Any:

    field = f"model.tune.space.{name}"
    if not isinstance(name, str) or not re.match(r"^[A-Za-z_]\w*$", name):
        c.add(f"{name!r} is not a parameter name", node=node, field="model.tune.space", at=raw)
        return None
    if name == "seed":
        c.add("the seed is not tuned: it is model.seed, part of the version", node=node, field=field, at=raw)
        return None
    if not c.typed(raw, dict, "a mapping with type (int, float, loguniform, categorical)", node=node, field=field,
                   at=raw):
        return None
    kind = raw.get("type")
    if kind not in SEARCH_KEYS:
        c.add(f"type must be one of {', '.join(SEARCH_KEYS)}, got {kind!r}", node=node, field=f"{field}.type", at=raw)
        return None
    c.keys(raw, SEARCH_KEYS[kind], node=node, prefix=f"{field}.")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices or not all(
                c_ is None or isinstance(c_, (bool, int, float, str)) for c_ in choices):
            c.add(f"choices must be a non-empty list of plain values, got {choices!r}", node=node,
                  field=f"{field}.choices", at=raw)
            return None
        if len(set(map(repr, choices))) != len(choices):
            c.add(f"choices repeat a value: {choices!r}", node=node, field=f"{field}.choices", at=raw)
            return None
        return SearchParam(name=name, type=kind, choices=tuple(choices))
    bounds = {}
    for key in ("low", "high"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            c.add(f"{key} must be a number, got {value!r}", node=node, field=f"{field}.{key}", at=raw)
            return None
        if kind == "int" and not isinstance(value, int):
            c.add(f"{key} must be a whole number for an int parameter, got {value!r}", node=node,
                  field=f"{field}.{key}", at=raw)
            return None
        bounds[key] = value
    if bounds["low"] >= bounds["high"]:
        c.add(f"low ({bounds['low']}) must be below high ({bounds['high']})", node=node, field=field, at=raw)
        return None
    log = bool(raw.get("log", False)) or kind == "loguniform"
    if "log" in raw and not isinstance(raw["log"], bool):
        c.add(f"log must be true or false, got {raw['log']!r}", node=node, field=f"{field}.log", at=raw)
        return None
    if log and bounds["low"] <= 0:
        c.add(f"a log scale needs low > 0, got {bounds['low']}", node=node, field=f"{field}.low", at=raw)
        return None
    step = raw.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
                             or (kind == "int" and not isinstance(step, int))):
        c.add(f"step must be a positive {'whole ' if kind == 'int' else ''}number, got {step!r}", node=node,
              field=f"{field}.step", at=raw)
        return None
    if step is not None and log:
        c.add("step and a log scale cannot be combined (Optuna samples one or the other)", node=node, field=field,
              at=raw)
        return None
    if sampler == "grid" and kind != "int" and step is None:
        c.add("the grid sampler needs a finite grid: give this float a step, or make it categorical", node=node,
              field=field, at=raw)
        return None
    if sampler == "grid" and kind == "int" and log:
        c.add("the grid sampler needs a finite grid: drop log for this int", node=node, field=field, at=raw)
        return None
    if sampler == "grid":
        size = (bounds["high"] - bounds["low"]) / (step or 1) + 1
        if size > 10_000:
            c.add(f"this grid has {int(size)} points; at most 10000 per parameter", node=node, field=field, at=raw)
            return None
    return SearchParam(name=name, type=kind, low=bounds["low"], high=bounds["high"], step=step, log=log)


def _parse_tune(c: _Checker, raw: Any, node: str, metrics: Any, params: Mapping) -> Any:

    if not c.typed(raw, dict, "a mapping with space, metric, sampler, pruner, trials, timeout", node=node,
                   field="model.tune", at=raw):
        return None
    c.keys(raw, TUNE_KEYS, node=node, prefix="model.tune.")
    ok = True
    sampler, pruner = raw.get("sampler", "tpe"), raw.get("pruner", "none")
    if sampler not in SAMPLERS:
        c.add(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}", node=node, field="model.tune.sampler",
              at=raw)
        ok = False
    if pruner not in PRUNERS:
        c.add(f"pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}", node=node, field="model.tune.pruner",
              at=raw)
        ok = False
    space_raw = raw.get("space")
    space = []
    if not isinstance(space_raw, dict) or not space_raw:
        c.add("space must map at least one parameter to its range, e.g. {max_iter: {type: int, low: 50, high: 300}}",
              node=node, field="model.tune.space", at=raw)
        ok = False
    else:
        for name, spec in space_raw.items():
            parsed = _parse_search_param(c, name, spec, node, sampler)
            ok = ok and parsed is not None
            if parsed is not None:
                space.append(parsed)
    metric = raw.get("metric", metrics.primary if metrics is not None else None)
    if not isinstance(metric, str) or not metric:
        c.add("metric must name the metric to optimize (a key of the model's metrics, e.g. mae), unless "
              "model.metrics declares a primary one", node=node, field="model.tune.metric", at=raw)
        ok = False
    direction = raw.get("direction")
    if direction is not None and direction not in ("higher", "lower"):
        c.add(f"direction must be higher or lower, got {direction!r}", node=node, field="model.tune.direction", at=raw)
        ok = False
    higher = None
    if direction is not None:
        higher = direction == "higher"
    elif metrics is not None and metric == metrics.primary:
        higher = metrics.higher_is_better
    elif metric in LOWER_IS_BETTER or metric in HIGHER_IS_BETTER:
        higher = metric in HIGHER_IS_BETTER
    elif isinstance(metric, str):
        c.add(f"say whether a higher {metric} is better: direction: higher or lower", node=node,
              field="model.tune.direction", at=raw)
        ok = False
    numbers = {}
    for key, default, low in (("trials", 20, 1), ("steps", 10, 1), ("seed", 0, 0)):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or value > 100_000:
            c.add(f"{key} must be a whole number from {low} to 100000, got {value!r}", node=node,
                  field=f"model.tune.{key}", at=raw)
            ok = False
        numbers[key] = value
    timeout = None
    if raw.get("timeout") is not None:
        timeout = _seconds(raw["timeout"])
        if timeout is None or timeout <= 0:
            c.add(f"timeout must be a duration like 90s, 10m or 2h (a bare number is seconds), got "
                  f"{raw['timeout']!r}", node=node, field="model.tune.timeout", at=raw)
            ok = False
    if not ok:
        return None
    return TuneSpec(space=tuple(space), metric=metric, higher_is_better=bool(higher), sampler=sampler, pruner=pruner,
                    trials=numbers["trials"], timeout_s=timeout, steps=numbers["steps"], seed=numbers["seed"])


def _parse_metrics(c: _Checker, raw: Any, node: str) -> Any:

    if not c.typed(raw, dict, "a mapping with primary (and direction, also)", node=node, field="model.metrics", at=raw):
        return None
    c.keys(raw, METRIC_KEYS, node=node, prefix="model.metrics.")

    known = set(scorer_names())
    primary, also = raw.get("primary"), raw.get("also", [])
    ok = c.typed(primary, str, "a scikit-learn scorer name", node=node, field="model.metrics.primary", at=raw)
    if not isinstance(also, list) or not all(isinstance(a, str) for a in also):
        c.add(f"expected a list of scorer names, got {also!r}", node=node, field="model.metrics.also", at=raw)
        ok = False
    for name, field in ([(primary, "primary")] if ok else []) + [(a, "also") for a in also if isinstance(a, str)]:
        if name not in known:
            close = [k for k in sorted(known) if name.split("_")[-1] in k][:6]
            c.add(f"{name!r} is not a scikit-learn scorer" + (f" (did you mean {', '.join(close)}?)" if close else
                                                              " (see sklearn.metrics.get_scorer_names())"),
                  node=node, field=f"model.metrics.{field}", at=raw)
            ok = False
    direction = raw.get("direction")
    if direction is not None and direction not in ("higher", "lower"):
        c.add(f"direction must be higher or lower, got {direction!r}", node=node, field="model.metrics.direction",
              at=raw)
        ok = False
    if not ok:
        return None
    higher = higher_is_better(primary) if direction is None else direction == "higher"
    return MetricSpec(primary=primary, higher_is_better=higher, also=tuple(also))


SPLIT_KINDS = {"time": SPLIT_KEYS, "random": {"kind", "evaluate_share", "score_share", "seed", "key"},
               "column": {"kind", "column", "evaluate", "score"}, "table": {"kind", "evaluate"}}


def _parse_split(c: _Checker, rs: Mapping, node: str) -> Any:
    """A time split (the default), a seeded random split, or a split by a group or holdout column."""

    kind = rs.get("kind", "time")
    if kind not in SPLIT_KINDS:
        c.add(f"unknown split kind {kind!r} (known: {', '.join(SPLIT_KINDS)})", node=node, field="model.split.kind",
              at=rs)
        return None
    c.keys(rs, SPLIT_KINDS[kind] | {"kind"}, node=node, prefix="model.split.")
    if kind == "random":
        shares = {}
        for key, default in (("evaluate_share", None), ("score_share", 0.0)):
            value = rs.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                c.add(f"expected a share between 0 and 1, got {value!r}", node=node, field=f"model.split.{key}", at=rs)
                return None
            shares[key] = float(value)
        if shares["evaluate_share"] <= 0 or sum(shares.values()) >= 1:
            c.add("evaluate_share must be above 0 and leave rows to train on", node=node, field="model.split", at=rs)
            return None
        seed, key = rs.get("seed", 0), rs.get("key")
        if not c.typed(seed, int, "a whole number", node=node, field="model.split.seed", at=rs) or (
                key is not None and not c.typed(key, str, "a column name", node=node, field="model.split.key", at=rs)):
            return None
        return RandomSplit(seed=seed, key=key, **shares)
    if kind == "table":
        table = rs.get("evaluate")
        if not c.typed(table, str, "the name of an input table", node=node, field="model.split.evaluate", at=rs):
            return None
        return TableSplit(evaluate=table)
    if kind == "column":
        column = rs.get("column")
        if not c.typed(column, str, "a column name", node=node, field="model.split.column", at=rs):
            return None
        parts = {}
        for key in ("evaluate", "score"):
            value = rs.get(key, [])
            if not isinstance(value, list) or (key == "evaluate" and not value):
                c.add(f"expected a list of {column} values" + (" (at least one)" if key == "evaluate" else ""),
                      node=node, field=f"model.split.{key}", at=rs)
                return None
            parts[key] = tuple(value)
        if set(parts["evaluate"]) & set(parts["score"]):
            c.add("a value cannot be both evaluated and scored", node=node, field="model.split", at=rs)
            return None
        return ColumnSplit(column=column, **parts)
    dates = {}
    for key in ("train_until", "evaluate_until"):
        d = _as_date(rs.get(key))
        if d is None:
            c.add(f"expected a date like 2013-10-01, got {rs.get(key)!r}", node=node, field=f"model.split.{key}", at=rs)
        dates[key] = d
    tc = rs.get("time_column")
    if not c.typed(tc, str, "a column name", node=node, field="model.split.time_column", at=rs):
        tc = None
    if all(dates.values()) and dates["train_until"] >= dates["evaluate_until"]:
        c.add("train_until must be before evaluate_until", node=node, field="model.split", at=rs)
    elif all(dates.values()) and tc:
        return TimeSplit(time_column=tc, **dates)
    return None


def _parse_gates(c: _Checker, raw: Any, node: str) -> GateSpec | None:
    if not c.typed(raw, dict, "a mapping of gate thresholds", node=node, field="model.gates", at=raw):
        return None
    c.keys(raw, GATE_KEYS, node=node, prefix="model.gates.")
    values: dict[str, Any] = {}
    ok = True
    for key, value in raw.items():
        if key not in GATE_KEYS:
            ok = False
            continue
        field = f"model.gates.{key}"
        if key == "subgroups":
            cols = _column_list(c, value, node=node, field=field, at=raw)
            ok &= cols is not None
            values[key] = cols or ()
        elif key in ("batch_rows", "subgroup_min_rows"):
            if c.typed(value, int, "a whole number", node=node, field=field, at=raw) and value > 0:
                values[key] = value
            else:
                ok = False
                if isinstance(value, int) and not isinstance(value, bool):
                    c.add(f"must be positive, got {value}", node=node, field=field, at=raw)
        else:
            number = _number(c, value, node=node, field=field, at=raw)
            if number is None:
                ok = False
            elif number < 0 and key != "subgroup_limit":
                c.add(f"must not be negative, got {number}", node=node, field=field, at=raw)
                ok = False
            else:
                values[key] = float(number)
    return GateSpec(**values) if ok else None
