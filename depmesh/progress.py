"""A Dagster logger that prints one readable line per finished or failed step,
so long runs on the command line show progress without Dagster's debug stream."""

from __future__ import annotations

import logging
import sys
import time

from dagster import logger

PROGRESS_LOGGER = "depmesh_progress"


def root_cause(error) -> str:
    """'Type: first line' of the innermost cause of a Dagster SerializableErrorInfo."""
    if error is None:
        return ""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    text = (error.message or "").strip()
    first = text.splitlines()[0] if text else ""
    name = error.cls_name or ""
    # Dagster's messages usually open with the (qualified) class name already
    return first if first.split(":", 1)[0].endswith(name) else f"{name}: {first}"


class _ProgressHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.started = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        message = meta.get("orig_message") or record.getMessage()
        step = meta.get("step_key") or ""
        elapsed = time.perf_counter() - self.started
        line = None
        if event is not None and event.event_type_value in ("STEP_FAILURE", "ASSET_CHECK_EVALUATION"):
            if event.event_type_value == "STEP_FAILURE":
                cause = root_cause(getattr(event.event_specific_data, "error", None))
                line = f"FAILED {step}: {cause or message}"
            else:
                evaluation = event.event_specific_data  # an AssetCheckEvaluation
                if getattr(evaluation, "passed", True) is False:
                    asset = "/".join(evaluation.asset_key.path)
                    severity = evaluation.severity.value if evaluation.severity is not None else "ERROR"
                    line = (f"{'CHECK FAILED' if severity == 'ERROR' else 'warning'} {asset} "
                            f"{evaluation.check_name}: {evaluation.description or ''}")[:300]
        elif event is not None and event.event_type_value == "STEP_SKIPPED":
            line = f"skipped {step}"
        elif event is not None and event.event_type_value == "STEP_UP_FOR_RETRY":
            line = f"retrying {step}: {root_cause(getattr(event.event_specific_data, 'error', None))}"
        elif isinstance(message, str) and message.startswith("depmesh: "):
            line = message[len("depmesh: "):]
        if line:
            print(f"[{elapsed:7.1f}s] {line}", file=sys.stderr, flush=True)


@logger(description="One line per built asset, failed check and failed step (used by `depmesh run`).")
def progress_logger(init_context) -> logging.Logger:
    log = logging.getLogger(f"depmesh.progress.{init_context.run_id}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    if not log.handlers:
        log.addHandler(_ProgressHandler())
    return log
