"""What a training is made of, captured as it runs: the code (git commit and
the diff of uncommitted changes), the lock file, the host, the time and the
peak memory it took, and its training curves.

Nothing here imports scikit-learn or pandas at module level.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

MAX_CURVE_ROWS = 3000  # rows a curve is computed on (train and validation each): cheap enough to run every training


@dataclass(frozen=True)
class CodeState:
    """The code a training ran: the repository root, its commit, the diff of
    uncommitted changes (``git diff HEAD``, binary-safe) and the project's own
    lock file found at the root, whatever its format (none is fine). A field is None when it could not be found; ``missing``
    says why, in words for the recipe check."""

    root: str | None
    commit: str | None
    diff: bytes | None
    lock_name: str | None
    lock: bytes | None
    missing: tuple[str, ...] = ()


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60)


def repository_of(path: Path) -> Path | None:
    try:
        out = _git(path if path.is_dir() else path.parent, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(out.stdout.decode().strip()) if out.returncode == 0 else None


@lru_cache(maxsize=64)
def _code_state(root: str, head_key: str) -> CodeState:  # head_key: HEAD and index/worktree stamp, for the cache
    path = Path(root)
    missing = []
    head = _git(path, "rev-parse", "HEAD")
    commit = head.stdout.decode().strip() if head.returncode == 0 else None
    if commit is None:
        missing.append(f"the repository at {root} has no commit yet")
    diff = None
    if commit:
        out = _git(path, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
        diff = out.stdout if out.returncode == 0 else None
        if diff is None:
            missing.append(f"`git diff HEAD` failed in {root}: {out.stderr.decode(errors='replace').strip()[:200]}")
        else:
            diff += _untracked_diff(path)
    from depmesh.tracking.environment import project_lock

    found = project_lock(path)  # whatever the project pins with; optional (the environment itself is recorded)
    lock_name, lock = found if found else (None, None)
    return CodeState(root, commit, diff, lock_name, lock, tuple(missing))


MAX_UNTRACKED_BYTES = 1_000_000


def _untracked_diff(root: Path) -> bytes:
    """New files git does not track yet (and does not ignore), as a patch that
    creates them: a module written but not committed is part of the code that ran."""
    listed = _git(root, "ls-files", "--others", "--exclude-standard", "-z")
    out = b""
    for name in filter(None, listed.stdout.split(b"\0")):
        path = root / name.decode(errors="surrogateescape")
        if not path.is_file() or path.stat().st_size > MAX_UNTRACKED_BYTES:
            continue
        patch = _git(root, "diff", "--no-index", "--binary", "--no-color", "--", "/dev/null", name.decode())
        out += patch.stdout
    return out


def _stamp(root: Path) -> str:
    """Changes whenever HEAD, the index, a tracked file or the untracked files change (one git status)."""
    out = _git(root, "status", "--porcelain=v1", "-z")
    head = _git(root, "rev-parse", "HEAD").stdout
    return hashlib.sha256(head + out.stdout).hexdigest()


def code_state(module_file: str | None) -> CodeState:
    """The code state of the repository holding ``module_file`` (a trainer's module)."""
    where = Path(module_file).resolve() if module_file else Path.cwd()
    root = repository_of(where)
    if root is None:
        return CodeState(None, None, None, None, None,
                         (f"{where} is not in a git repository, so its code has no commit to rebuild from",))
    return _code_state(str(root), _stamp(root))


def module_file(entrypoint: str) -> str | None:
    module = sys.modules.get(entrypoint.split(":")[0])
    return getattr(module, "__file__", None)


def host() -> str:
    return socket.gethostname()


class PeakMemory:
    """The peak resident memory of this process while a block runs, sampled
    every ``every_s`` by a thread reading /proc/self/statm (Linux; elsewhere
    the process's lifetime peak from getrusage). MB."""

    def __init__(self, every_s: float = 0.02):
        self.every_s = every_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm", "rb") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_bytes = max(self.peak_bytes, self._rss())

    def __enter__(self) -> PeakMemory:
        self.peak_bytes = self._rss()
        self._thread = threading.Thread(target=self._run, name="depmesh-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss())

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)


@dataclass
class Curves:
    """Series name -> (steps, values), e.g. ``validation/mae``."""

    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    def add(self, name: str, steps: list[int], values: list[float]) -> None:
        clean = [(int(s), float(v)) for s, v in zip(steps, values) if v == v]  # drop NaN
        if clean:
            self.series[name] = ([s for s, _ in clean], [v for _, v in clean])


def _final_step(estimator: Any) -> tuple[Any, Any]:
    """(preprocessing or None, final estimator) of a Pipeline or a bare estimator."""
    steps = getattr(estimator, "steps", None)
    if steps:
        return (estimator[:-1] if len(steps) > 1 else None), steps[-1][1]
    return None, estimator


def _head(X: Any, y: Any, rows: int) -> tuple[Any, Any]:
    if len(X) <= rows:
        return X, y
    step = len(X) / rows
    import numpy as np

    index = (np.arange(rows) * step).astype(int)
    return (X.iloc[index] if hasattr(X, "iloc") else X[index]), (y.iloc[index] if hasattr(y, "iloc") else y[index])


def loss_name(estimator: Any) -> str:
    _, final = _final_step(estimator)
    if hasattr(final, "predict_proba") and hasattr(final, "classes_"):
        return "log_loss"
    loss = str(getattr(final, "loss", ""))
    return "mae" if "absolute" in loss else "rmse"


def _loss(name: str, y: Any, predicted: Any, classes: Any = None) -> float:
    import numpy as np

    if name == "log_loss":  # by hand: scikit-learn's validation costs more than the sum, once per iteration
        proba = np.clip(np.asarray(predicted, dtype="float64"), 1e-15, 1.0)
        index = np.searchsorted(np.asarray(classes), np.asarray(y))
        return float(-np.mean(np.log(proba[np.arange(len(index)), index])))
    residual = np.asarray(y, dtype="float64") - np.asarray(predicted, dtype="float64")
    return float(np.mean(np.abs(residual))) if name == "mae" else float(np.sqrt(np.mean(residual ** 2)))


def staged_curves(estimator: Any, train: tuple[Any, Any] | None, validation: tuple[Any, Any] | None) -> Curves:
    """Per-iteration loss on (a sample of) the training and validation rows,
    for estimators that predict stage by stage (gradient boosting), else what
    the fit exposes: ``loss_curve_`` / ``validation_scores_`` (MLP),
    ``train_score_`` / ``validation_score_``, ``inertia_`` (k-means)."""
    curves = Curves()
    prep, final = _final_step(estimator)
    name = loss_name(estimator)
    classes = getattr(final, "classes_", None)
    staged = getattr(final, "staged_predict_proba" if name == "log_loss" else "staged_predict", None)
    if staged is not None:
        for label, data in (("train", train), ("validation", validation)):
            if data is None or len(data[0]) == 0:
                continue
            X, y = _head(data[0], data[1], MAX_CURVE_ROWS)
            X = prep.transform(X) if prep is not None else X
            values = [_loss(name, y, predicted, classes) for predicted in staged(X)]
            curves.add(f"{label}/{name}", list(range(1, len(values) + 1)), values)
        if curves.series:
            return curves
    for attribute, series in (("loss_curve_", "train/loss"), ("validation_scores_", "validation/score"),
                              ("train_score_", "train/score"), ("validation_score_", "validation/score")):
        values = getattr(final, attribute, None)
        if values is not None and len(values):
            curves.add(series, list(range(1, len(values) + 1)), [float(v) for v in values])
    if not curves.series and hasattr(final, "inertia_"):
        curves.add("train/inertia", [int(getattr(final, "n_iter_", 1))], [float(final.inertia_)])
    return curves


def estimator_params(estimator: Any) -> dict[str, Any]:
    """Every parameter of a fitted estimator, defaults included (nested
    pipeline steps as ``step__param``), as JSON-friendly scalars."""
    get = getattr(estimator, "get_params", None)
    if get is None:
        return {}
    out: dict[str, Any] = {}
    for key, value in sorted(get(deep=True).items()):
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            out[key] = list(value)
        elif hasattr(value, "get_params"):
            continue  # the nested estimator's own parameters are listed under key__*
        else:
            out[key] = repr(value)[:200]
    return out


def library_versions() -> dict[str, str]:
    """The versions of the libraries a training ran with (recorded on the version and its training)."""
    import platform

    import dagster
    import numpy
    import pandas
    import sklearn

    return {
        "python": platform.python_version(),
        "dagster": dagster.__version__,
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
    }
