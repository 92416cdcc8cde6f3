"""Running one node's step: what the asset's compute function does when Dagster executes it.

``NodeStep`` holds what the declaration fixed (the node, its builder, code version, blocking checks) and runs the
step: the edge contracts on its inputs, the builder or trainer (under the tracking recorder for a model, through
the registry's Production set for a scores node), then its verdicts. When every blocking verdict passes the output
comes first and the verdicts target it; when one fails, the verdicts alone, and the node reports itself blocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from dagster import AssetCheckResult, AssetExecutionContext, AssetKey, Output

from depmesh.assets.db_retries import retry_on_lost_database
from depmesh.assets.lineage_step import StepLineage
from depmesh.assets.serving_step import (
    _active_rollout,
    _not_served,
    _rollout_result,
    _serve,
    _served_metadata,
    _served_result,
    _serving_plan,
)
from depmesh.assets.step import (
    MeshRuntime,
    NodeContext,
    _check_table,
    _gate_latencies,
    _missing_column,
    _record_failure,
    _recorder,
    _refuse_empty_inputs,
    _table_output,
    _tag_trigger,
    with_run_params,
)
from depmesh.assets.verdicts import (
    _blocked,
    _gate_and_register,
    _judge_stored,
    annotate_verdict,
    record_incidents,
    with_failure_modes,
)
from depmesh.catalog import NodeSpec
from depmesh.contracts.checks import input_contract_result
from depmesh.keys import DRILL_FAULT_TAG, RUNTIME_KEY, SAMPLE_IGNORED_KEY
from depmesh.versions import frame_version


class NodeStep:
    def __init__(self, node: NodeSpec, key: AssetKey, builder: Callable[..., Any], code: str,
                 blocking_checks: frozenset[str], names: dict[str, str], downstream_of: Callable[[str], list[str]],
                 catalog_path: Any, failure_modes: Any, serving_spec: Any):
        self.node, self.key, self.builder, self.code = node, key, builder, code
        self.blocking_checks, self.names, self.downstream_of = blocking_checks, names, downstream_of
        self.catalog_path, self.failure_modes, self.serving_spec = catalog_path, failure_modes, serving_spec

    def run(self, context: AssetExecutionContext, kwargs: dict[str, Any]) -> Iterator[Any]:
        """The events of the step, only those Dagster asked for: a model's gate checks executed alone judge the
        stored version (no training, nothing recorded); a partial selection stores nothing."""
        selected_checks = {k.name for k in context.selected_asset_check_keys}
        building = self.key in context.selected_asset_keys
        lineage = StepLineage.start(context, self.node, self.catalog_path) if building else None
        with retry_on_lost_database(context, self.node.name) as guard:
            events = (_judge_stored(context, self.node, self.blocking_checks, self.failure_modes)
                      if self.node.kind == "model" and not building else self.build(context, kwargs))
            try:
                for event in events:
                    if lineage is not None:
                        lineage.see(event)
                    if isinstance(event, Output):
                        if not building:
                            continue
                        guard()
                    elif isinstance(event, AssetCheckResult) and event.check_name not in selected_checks:
                        continue
                    yield event
            except BaseException as exc:
                if lineage is not None:
                    lineage.fail(exc)
                raise
        if lineage is not None:
            lineage.finish(self.blocking_checks, self.downstream_of)

    def build(self, context: AssetExecutionContext, kwargs: dict[str, Any]) -> Iterator[Any]:
        node = self.node
        if context.run.tags.get(DRILL_FAULT_TAG) == f"kill-step:{node.name}":
            os.kill(os.getpid(), signal.SIGKILL)  # a drill's killed step (depmesh drill); nothing otherwise
        inputs = {self.names[arg]: value for arg, value in kwargs.items()}
        runtime: MeshRuntime = getattr(context.resources, RUNTIME_KEY)
        trigger = _tag_trigger(context)
        results: list[AssetCheckResult] = []
        if node.edges:
            edge_result = input_contract_result(node, inputs, _gate_latencies(context, node, inputs))
            results.append(edge_result)
            if not edge_result.passed:
                yield from self.finish(context, results, None, None)
                return
        recorder, built = None, node
        if node.kind == "model":
            _refuse_empty_inputs(node, inputs)
            built = with_run_params(node, context.run.tags)
            recorder = _recorder(context, built, self.code, trigger, self.catalog_path)
        served_plan = None
        if node.kind == "scores":
            served_plan = _serving_plan(context, node, inputs, self.serving_spec)
            if served_plan.mode == "skip":
                yield from _not_served(context, node, served_plan)
                return
            if context.run.tags.get(DRILL_FAULT_TAG) != f"serve-unapproved:{node.name}":  # the drill's fault:
                inputs = served_plan.inputs  # serving that bypasses the registry
        ctx = NodeContext(node=built, sample_fraction=runtime.sample_fraction, log=context.log)
        serving = _active_rollout(context) if node.kind == "scores" else None
        started = time.perf_counter()
        result, figures = self._compute(context, inputs, ctx, recorder, serving)
        seconds = time.perf_counter() - started
        ignored_sample = not node.inputs and runtime.sample_fraction < 1 and not ctx.sample_read
        if ignored_sample:
            context.log.warning(f"depmesh: {node.name}'s loader ignored --sample {runtime.sample_fraction:g}: it "
                                "stored its full data (read ctx.sample_fraction to honour samples)")
        if node.kind == "model":
            output, judged = self._judge_model(context, built, result, inputs, seconds, ctx, recorder, results)
        else:
            output, judged = self._judge_table(context, result, runtime, seconds, serving, figures, served_plan,
                                               ignored_sample, results)
        yield from self.finish(context, results, output, judged)
        if output is not None:
            context.log.info(f"depmesh: built {node.name} in {seconds:.2f}s")

    def _compute(self, context: AssetExecutionContext, inputs: dict[str, Any], ctx: NodeContext, recorder: Any,
                 serving: Any) -> tuple[Any, Any]:
        """(what the builder returned, the rollout's per-arm figures or None); a failed training is recorded, a
        missing input column named."""
        try:
            with recorder.measure() if recorder is not None else contextlib.nullcontext():
                served = (_serve(self.node, inputs, self.builder, ctx, context, serving)
                          if serving is not None else None)
                return served if served is not None else (self.builder(inputs, ctx), None)
        except Exception as exc:
            if recorder is not None:
                _record_failure(context, recorder, exc)
            if isinstance(exc, KeyError):
                missing = _missing_column(self.node, inputs, exc)
                if missing is not None:
                    raise missing from exc
            raise

    def _judge_model(self, context: AssetExecutionContext, built: NodeSpec, result: Any, inputs: dict[str, Any],
                     seconds: float, ctx: NodeContext, recorder: Any,
                     results: list[AssetCheckResult]) -> tuple[Output | None, str]:
        from depmesh.models import TrainedModel

        node = self.node
        if not isinstance(result, TrainedModel):
            raise TypeError(f"node {node.name}: trainer {node.model.trainer} returned {type(result).__name__}, "
                            "expected a TrainedModel")
        gate_results, output = _gate_and_register(context, built, result, inputs, self.code, seconds, ctx, recorder,
                                                  params_from_run=built is not node)
        results.extend(gate_results)
        return output, f"model version {result.version}"

    def _judge_table(self, context: AssetExecutionContext, result: Any, runtime: MeshRuntime, seconds: float,
                     serving: Any, figures: Any, served_plan: Any, ignored_sample: bool,
                     results: list[AssetCheckResult]) -> tuple[Output | None, str]:
        node = self.node
        check_results, extra = _check_table(context, node, result, runtime)
        results.extend(check_results)
        if node.kind == "scores":
            results.append(_rollout_result(context, node, serving, figures))
            served = _served_result(context, served_plan, result, serving)
            results.append(served)
            if not served.passed:
                extra = None
            elif extra is not None:
                extra = {**_served_metadata(served_plan, serving), **extra}
        if extra is not None and ignored_sample:
            extra[SAMPLE_IGNORED_KEY] = f"the loader ignored the sample {runtime.sample_fraction:g}: full data"
        output = _table_output(result, node, seconds, extra) if extra is not None else None
        judged = (f"data version {frame_version(result)}" if output is None
                  else f"data version {output.data_version.value}")
        return output, judged

    def finish(self, context: AssetExecutionContext, results: list[AssetCheckResult], output: Output | None,
               judged: str | None) -> Iterator[Any]:
        """When every blocking verdict passed: the output first, then the verdicts, which so target the
        materialization they judged. When one failed: the verdicts alone, each naming the version it judged and
        that it was not stored; the step still succeeds."""
        if output is not None:
            yield output
        for r in results:
            yield with_failure_modes(annotate_verdict(r, judged, output is not None,
                                                      r.check_name in self.blocking_checks),
                                     self.failure_modes, self.node.name)
        failed = [r for r in results if not r.passed and r.check_name in self.blocking_checks]
        record_incidents(context, self.failure_modes, self.node.name, [r for r in results if not r.passed], judged)
        if output is None:
            yield from _blocked(context, self.node, failed, self.downstream_of)
