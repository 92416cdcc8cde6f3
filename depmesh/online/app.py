"""The online server: a Starlette application that answers with the mesh's Production release.

``POST /v1/models/<node>:predict`` scores rows (records or columns JSON) with the served version of ``<node>``,
computing its upstream models' predictions inside the request from the versions it was trained against;
``GET /v1/models/<node>`` describes what a request must carry; ``GET /v1/release`` what serves;
``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus) for operators. With ``DEPMESH_SERVE_TOKEN`` set, every
route but the two probes needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from depmesh.online.figures import OnlineFigures
from depmesh.online.follower import Follower, Holder
from depmesh.online.metrics import Metrics
from depmesh.online.requests import MAX_BODY_BYTES, MAX_ROWS, BadRequest, check, read_json, rows_of
from depmesh.online.served import Loader, SetRefused, folder_loader, from_folder

TOKEN_ENV = "DEPMESH_SERVE_TOKEN"
CONFIG_ENV = "DEPMESH_SERVE_CONFIG"
PREDICT = ":predict"
log = logging.getLogger("depmesh.serve")


@dataclass(frozen=True)
class ServeConfig:
    catalog: str | None = None  # follow this mesh's registry ...
    home: str | None = None
    release: str | None = None  # ... or serve this bundled release folder (a container's)
    max_body_bytes: int = MAX_BODY_BYTES
    max_rows: int = MAX_ROWS
    poll_s: float = 0.25

    def to_env(self) -> str:
        return json.dumps(asdict(self))


def app_from_env() -> Starlette:
    """The application uvicorn's workers build (the command line puts the configuration in the environment)."""
    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _refusal(status: int, error: str, problem: str, model: str | None = None, **headers: str) -> JSONResponse:
    """A request not answered, in the one shape every refusal takes (BadRequest.body)."""
    return JSONResponse(BadRequest(status, error, [problem], model=model).body(), status_code=status,
                        headers=headers or None)


def _values(array: Any) -> list[Any]:
    import numpy as np

    values = np.asarray(array)
    if values.dtype.kind == "f":
        return [None if not np.isfinite(v) else float(v) for v in values.tolist()]
    return values.tolist()


class Service:
    """What the routes share: the served set, the follower, metrics, online rollout figures."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.holder = Holder(self.metrics)
        self.figures = OnlineFigures()
        self.token = os.environ.get(TOKEN_ENV) or None
        self.follower: Follower | None = None
        self.registry: Any = None
        self.load_error: str | None = None

    def start(self) -> None:
        from threadpoolctl import threadpool_limits

        # one native thread per worker: a request's rows gain nothing from OpenMP's threads, and several workers'
        # thread pools would fight over the cores
        self._threads = threadpool_limits(1)
        if self.config.release:
            threading.Thread(target=self._load_folder, name="depmesh-serve-load", daemon=True).start()
            return
        from depmesh.artifacts import ArtifactStore
        from depmesh.assets.io import artifacts_dir
        from depmesh.catalog import load_catalog
        from depmesh.governance import open_governed
        from depmesh.instance import default_home
        from depmesh.registry.store import default_url

        mesh = load_catalog(Path(self.config.catalog))  # the command line resolves the default catalog
        home = Path(self.config.home) if self.config.home else default_home()
        self.registry = open_governed(default_url(home), mesh, ArtifactStore(artifacts_dir(home)))
        self.follower = Follower(self.registry, self.holder, Loader(mesh), self.figures, self.config.poll_s)
        threading.Thread(target=self._first_load, name="depmesh-serve-load", daemon=True).start()

    def _first_load(self) -> None:
        try:
            self.follower.load_once()
        except Exception as exc:  # noqa: BLE001 - the follower tries again at its next poll
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("depmesh serve: the first load failed")
        self.follower.start()

    def _load_folder(self) -> None:
        try:
            self.holder.swap(from_folder(Path(self.config.release), folder_loader()))
        except (SetRefused, OSError, ValueError, KeyError) as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            self.holder.refuse(("folder", self.config.release), self.load_error)

    def stop(self) -> None:
        if self.follower is not None and self.follower.is_alive():
            self.follower.stop()
        if self.registry is not None:
            self.registry.dispose()

    def authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())


def _unauthorized() -> JSONResponse:
    return _refusal(401, "unauthorized", f"send Authorization: Bearer <the {TOKEN_ENV}>",
                    **{"WWW-Authenticate": "Bearer"})


async def _read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise BadRequest(413, "body_too_large", [f"the body is {declared} bytes; at most {cap} are read"])
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind not in ("application/json", ""):
        raise BadRequest(415, "unsupported_media_type", [f"the body is {kind}; send application/json"])
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BadRequest(413, "body_too_large", [f"the body is over {cap} bytes"])
        chunks.append(chunk)
    return b"".join(chunks)


def _score(service: Service, served: Any, model: Any, checked: Any) -> tuple[dict[str, Any], Any, str]:
    """The answer for checked rows under the set the request started with, a background task (shadow
    scoring) or None, and the arm label for metrics."""
    import numpy as np

    from depmesh.rollout.arms import in_candidate

    started = time.perf_counter()
    production = model.predictor.answer(checked.columns, checked.dtypes)
    production_s = time.perf_counter() - started
    n = checked.rows
    answer = {k: (v if isinstance(v, dict) else np.asarray(v)) for k, v in production.items()}
    versions = np.full(n, model.version, dtype=object)
    arms = served.rollout
    candidate = arms.candidates.get(model.node) if arms is not None else None
    task, label = None, "production"
    if candidate is not None and arms.mode == "canary":
        chosen = (in_candidate(checked.keys, arms.percent, arms.id) if checked.keys is not None
                  else np.zeros(n, dtype=bool))
        cand, error, candidate_s = None, None, 0.0
        if chosen.any():
            started = time.perf_counter()
            try:
                part = checked.subset(chosen)
                cand = candidate.predictor.answer(part.columns, part.dtypes)
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot score is what the canary measures
                error = f"{type(exc).__name__}: {exc}"
            candidate_s = time.perf_counter() - started
        if cand is not None:
            for k, v in cand.items():
                if isinstance(v, dict):
                    for c, values in v.items():
                        answer[k][c] = np.asarray(answer[k][c], dtype="float64")
                        answer[k][c][chosen] = values
                else:
                    answer[k] = answer[k].astype(np.result_type(answer[k], v))
                    answer[k][chosen] = v
            versions[chosen] = candidate.version
            label = "candidate"
        service.figures.add(arms, model.node, model.version, production["prediction"], production_s,
                            exposed=int(chosen.sum()), candidate=None if cand is None else cand["prediction"],
                            paired=np.asarray(production["prediction"])[chosen], candidate_s=candidate_s, error=error)
    elif candidate is not None:  # shadow: answer with Production, score the candidate after the answer is sent
        task = BackgroundTask(_shadow, service, arms, model, candidate, checked, production, production_s)
    body = {"model": model.node, "release": served.release_id, "registry_revision": served.revision,
            "version": model.version, "upstream": model.upstream,
            "predictions": _values(answer["prediction"]), "model_versions": versions.tolist()}
    if "probability" in answer:
        body["probabilities"] = _values(answer["probability"])
    if "probabilities" in answer:
        body["class_probabilities"] = {c: _values(v) for c, v in answer["probabilities"].items()}
    if arms is not None and candidate is not None:
        body["rollout"] = {"id": arms.id, "mode": arms.mode, "percent": arms.percent, "key": arms.key,
                           "keyed": checked.keys is not None}
    return body, task, label


def _shadow(service: Service, arms: Any, model: Any, candidate: Any, checked: Any, production: Any,
            production_s: float) -> None:
    started = time.perf_counter()
    try:
        cand, error = candidate.predictor.answer(checked.columns, checked.dtypes), None
    except Exception as exc:  # noqa: BLE001
        cand, error = None, f"{type(exc).__name__}: {exc}"
    service.figures.add(arms, model.node, model.version, production["prediction"], production_s,
                        exposed=checked.rows, candidate=None if cand is None else cand["prediction"],
                        paired=production["prediction"], candidate_s=time.perf_counter() - started, error=error)


def _service(request: Request) -> Service:
    return request.app.state.service


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    service = _service(request)
    served = service.holder.current
    if served is None or not served.models:
        return _json({"ready": False, "reason": service.load_error or (
            (service.holder.last_refusal or {}).get("reason") or (
                "no verified release loaded yet" if served is None else
                f"no release of mesh {served.mesh} is Production yet (depmesh release request)"))}, 503)
    return _json({"ready": True, "release": served.release_id, "registry_revision": served.revision})


async def metrics(request: Request) -> Response:
    service = _service(request)
    if not service.authorized(request):
        return _unauthorized()
    body, kind = service.metrics.exposition()
    return Response(body, media_type=kind)


def _not_ready(service: Service) -> JSONResponse:
    return _refusal(503, "not_ready", service.load_error or "no verified release loaded yet")


async def release(request: Request) -> Response:
    service = _service(request)
    if not service.authorized(request):
        return _unauthorized()
    served = service.holder.current
    if served is None:
        return _not_ready(service)
    return _json({**served.describe(), "last_refusal": service.holder.last_refusal})


async def models(request: Request) -> Response:
    service = _service(request)
    if not service.authorized(request):
        return _unauthorized()
    served = service.holder.current
    name = request.path_params["rest"]
    if request.method == "POST":
        if not name.endswith(PREDICT):
            return _refusal(404, "not_found", f"POST /v1/models/<node>{PREDICT}")
        return await predict(request, service, served, name[: -len(PREDICT)])
    if served is None:
        return _not_ready(service)
    model = served.resolve(name)
    if model is None:
        return _unknown(served, name)
    schema = model.schema.to_json()
    return _json({"model": model.node, "version": model.version, "task": model.task, "release": served.release_id,
                  "upstream": model.upstream, "features": schema["fields"], "rollout_key": schema["key"],
                  "example": schema["example"], "request": {"records": [schema["example"]]}})


async def predict(request: Request, service: Service, served: Any, name: str) -> Response:
    started, config = time.perf_counter(), service.config
    if served is None:
        service.metrics.refusals.labels("not_ready").inc()
        return _not_ready(service)
    model = served.resolve(name)
    if model is None:
        service.metrics.refusals.labels("unknown_model").inc()
        return _unknown(served, name)
    try:
        payload = read_json(await _read_body(request, config.max_body_bytes), config.max_body_bytes)
        checked = check(model.schema, rows_of(payload, config.max_rows), model.dtypes)
    except BadRequest as exc:
        service.metrics.refusals.labels(exc.error).inc()
        service.metrics.requests.labels(model.node, "none", str(exc.status)).inc()
        body = exc.body()
        body.setdefault("model", model.node)
        return _json(body, exc.status)
    try:
        body, task, arm = await run_in_threadpool(_score, service, served, model, checked)
    except Exception as exc:  # noqa: BLE001 - a valid request the model could not answer: said, not a trace
        log.exception("depmesh serve: %s could not answer", model.node)
        service.metrics.requests.labels(model.node, "production", "500").inc()
        return _refusal(500, "model_failed", f"{type(exc).__name__}: {str(exc)[:300]}", model=model.node)
    service.metrics.requests.labels(model.node, arm, "200").inc()
    service.metrics.rows.labels(model.node, arm).inc(checked.rows)
    service.metrics.latency.labels(model.node, arm).observe(time.perf_counter() - started)
    return JSONResponse(body, background=task)


def create_app(config: ServeConfig) -> Starlette:
    service = Service(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
        Route("/v1/release", release), Route("/v1/models/{rest:path}", models, methods=["GET", "POST"]),
    ], lifespan=lifespan)
    app.state.service = service
    return app


def _unknown(served: Any, name: str) -> JSONResponse:
    return _refusal(404, "unknown_model", f"no model {name!r} in release {served.release_id} "
                                          f"(served: {', '.join(sorted(served.models))})")
