"""The FastAPI application: routes, access control, error replies. ``create_app`` takes a
``Service`` (built by ``build_service`` from settings, or by a test with fakes)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from greentune import __version__
from greentune.errors import DataError, GreentuneError
from greentune.serve.batching import Answer, DeadlineError, QueueFullError
from greentune.serve.engine import Engine, Loaded, load
from greentune.serve.keys import KeyStore, open_keys
from greentune.serve.limits import retry_after_header
from greentune.serve.middleware import ServeMiddleware
from greentune.serve.schemas import (
    ERRORS,
    PREDICT_ERRORS,
    RELOAD_ERRORS,
    ClassifyReply,
    ClassifyRequest,
    EnergyShare,
    ForecastPoint,
    ForecastReply,
    ForecastRequest,
    Health,
    Label,
    ModelCard,
    ModelRef,
    ModelsReply,
    ReloadRequest,
)
from greentune.serve.service import Service
from greentune.serve.settings import ServeSettings
from greentune.tasks import Prepared

api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")
bearer = HTTPBearer(auto_error=False, description="The same key as a bearer token")


def build_service(settings: ServeSettings) -> Service:
    """Load the keys and the model."""
    keys = open_keys(settings)
    return Service(settings, Engine(load(settings.run, settings.variant, settings.row)), keys)


def _service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def require(scope: str | None) -> Callable[..., Awaitable[str]]:
    """A dependency: the caller's key must exist, hold ``scope`` (None: any key) and be within
    its rate; returns the key id."""

    async def check(
        request: Request,
        key: Annotated[str | None, Security(api_key)],
        cred: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> str:
        svc = _service(request)
        if svc.keys is None:
            key_id = f"ip:{request.client.host if request.client else '?'}"
        else:
            token = key or (cred.credentials if cred else None)
            if not token:
                raise HTTPException(
                    401,
                    "missing API key: send X-API-Key: <key> or Authorization: Bearer <key>",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            record = await run_in_threadpool(svc.keys.verify, token)
            if record is None:
                raise HTTPException(
                    401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
                )
            if scope is not None and scope not in record.scopes:
                raise HTTPException(
                    403,
                    f"key {record.id} ({record.name}) may use {', '.join(record.scopes)}, not "
                    f"{scope}; ask for a key with that scope",
                )
            key_id = record.id
        request.state.key_id = key_id
        wait_s = svc.limiter.take(key_id)
        if wait_s > 0:
            raise HTTPException(
                429,
                f"rate limit of {svc.settings.rate_per_s:g} requests/s for this key; slow down",
                headers={"Retry-After": retry_after_header(wait_s)},
            )
        return key_id

    return check


def _model_ref(loaded: Loaded) -> ModelRef:
    return ModelRef(
        run=loaded.run.name,
        variant=loaded.variant,
        row=loaded.describe()["row"],
        version=loaded.version,
    )


def _check_task(svc: Service, task: str) -> Loaded:
    loaded = svc.loaded
    if loaded.task != task:
        raise HTTPException(
            404, f"this service serves a {loaded.task} model; use /v1/{loaded.task}"
        )
    return loaded


async def _answer(
    svc: Service,
    request: Request,
    response: Response,
    loaded: Loaded,
    prepare: Callable[[], Prepared],
) -> Answer:
    """Check the input in a worker thread, queue it, wait for its batch. While it is being
    checked the batcher knows it is coming and may hold a batch open for it."""
    batcher = svc.batcher
    assert batcher is not None
    batcher.arrive()
    try:
        prepared = await run_in_threadpool(prepare)
        if prepared.size > svc.settings.max_items:
            raise HTTPException(
                413,
                f"{prepared.size} predictions asked for; at most {svc.settings.max_items} per "
                "request: split it",
            )
        request.state.items = prepared.size
        queued = batcher.submit(prepared, svc.settings.timeout_s, tag=loaded)
    finally:
        batcher.depart()
    answer = await batcher.wait(queued, svc.settings.timeout_s)
    svc.requests += 1
    route = request.scope["route"].path
    svc.metrics.predictions.labels(route).inc(prepared.size)
    svc.metrics.energy_per_request.labels(route).observe(answer.energy_j)
    response.headers["X-Model-Version"] = answer.version.version
    response.headers["X-Energy-Joules"] = f"{answer.energy_j:.9g}"
    response.headers["X-Energy-Kind"] = batcher.probe.kind
    return answer


def _energy(svc: Service, answer: Answer) -> EnergyShare:
    assert svc.batcher is not None
    return EnergyShare(
        joules=answer.energy_j, kind=svc.batcher.probe.kind, batch_size=answer.batch_size
    )


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def add_routes(app: FastAPI) -> None:
    @app.post(
        "/v1/forecast", response_model=ForecastReply, tags=["predict"], responses=PREDICT_ERRORS
    )
    async def forecast(
        body: ForecastRequest,
        request: Request,
        response: Response,
        _: str = Depends(require("forecast")),
    ) -> ForecastReply:
        svc = _service(request)
        loaded = _check_task(svc, "forecast")
        answer = await _answer(
            svc,
            request,
            response,
            loaded,
            lambda: loaded.predictor.prepare(  # in a worker thread: a long history is slow
                pd.DataFrame.from_records(body.history), origins=body.origins, source="body.history"
            ),
        )
        out = answer.frame
        value_cols = [c for c in out.columns if c not in ("origin", "time", "step")]
        points = [
            ForecastPoint(
                origin=row["origin"],
                time=row["time"],
                step=int(row["step"]),
                values={c: _num(row[c]) for c in value_cols},
            )
            for row in out.to_dict("records")
        ]
        return ForecastReply(
            model=_model_ref(answer.version), forecasts=points, energy=_energy(svc, answer)
        )

    @app.post(
        "/v1/classify", response_model=ClassifyReply, tags=["predict"], responses=PREDICT_ERRORS
    )
    async def classify(
        body: ClassifyRequest,
        request: Request,
        response: Response,
        _: str = Depends(require("classify")),
    ) -> ClassifyReply:
        svc = _service(request)
        loaded = _check_task(svc, "classify")
        scanned = [svc.masker.scan(t) for t in body.texts]
        request.state.pii = sorted({kind for _, kinds in scanned for kind in kinds})
        texts = [masked for masked, _ in scanned] if svc.settings.mask_inputs else body.texts
        answer = await _answer(
            svc,
            request,
            response,
            loaded,
            lambda: loaded.predictor.prepare(texts, source="body.texts"),
        )
        labels = [c.removeprefix("p_") for c in answer.frame.columns if c.startswith("p_")]
        preds = [
            Label(
                label=str(row["label"]),
                probability=float(row["probability"]),
                probabilities={name: float(row[f"p_{name}"]) for name in labels},
            )
            for row in answer.frame.to_dict("records")
        ]
        return ClassifyReply(
            model=_model_ref(answer.version), predictions=preds, energy=_energy(svc, answer)
        )

    @app.get("/v1/models", response_model=ModelsReply, tags=["models"], responses=ERRORS)
    async def models(request: Request, _: str = Depends(require(None))) -> ModelsReply:
        svc = _service(request)
        card = ModelCard(**svc.loaded.describe(), served=svc.served())
        return ModelsReply(models=[card])

    @app.post("/admin/reload", response_model=ModelCard, tags=["admin"], responses=RELOAD_ERRORS)
    async def reload(
        body: ReloadRequest, request: Request, _: str = Depends(require("admin"))
    ) -> ModelCard:
        svc = _service(request)
        new = await asyncio.to_thread(svc.reload, body.run, body.variant, body.row)
        return ModelCard(**new.describe(), served=svc.served())

    @app.get("/healthz", response_model=Health, tags=["ops"], responses={500: {"model": Health}})
    async def healthz(request: Request) -> Any:
        svc = _service(request)
        if svc.started and (svc.batcher is None or not svc.batcher.alive) and not svc.draining:
            return JSONResponse({"status": "unhealthy", "detail": "batcher stopped"}, 500)
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
    async def readyz(request: Request) -> Any:
        svc = _service(request)
        if svc.draining or not svc.started:
            detail = "draining" if svc.draining else "starting"
            return JSONResponse({"status": "unavailable", "detail": detail}, 503)
        return Health(status="ready", detail=svc.loaded.version)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(request: Request) -> Response:
        svc = _service(request)
        if svc.batcher is not None:
            svc.metrics.queue_depth.set(svc.batcher.depth)
        body, content_type = svc.metrics.exposition()
        return Response(body, media_type=content_type)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status, headers=headers)


def add_error_replies(app: FastAPI) -> None:
    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        field = "texts" if request.url.path.endswith("classify") else "history"
        body = {"detail": [{"loc": ["body", field], "msg": str(exc), "type": "value_error"}]}
        return JSONResponse(body, 422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # a body that is not JSON at all is the client's encoding, not a field: 400, as
        # documented; field errors keep FastAPI's 422 with their location
        broken = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if broken:
            why = (broken[0].get("ctx") or {}).get("error", "")
            return _error(400, f"the body is not JSON{': ' + str(why) if why else ''}")
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(QueueFullError)
    async def queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "1"})

    @app.exception_handler(DeadlineError)
    async def deadline(request: Request, exc: DeadlineError) -> JSONResponse:
        return _error(504, str(exc))

    @app.exception_handler(GreentuneError)
    async def other(request: Request, exc: GreentuneError) -> JSONResponse:
        return _error(409 if request.url.path.startswith("/admin") else 500, str(exc))


def create_app(service: Service) -> FastAPI:
    app = FastAPI(
        title="greentune serve",
        version=__version__,
        description="Forecasts or text labels from a greentune run, with the energy of every "
        "request (X-Energy-Joules, X-Energy-Kind) and the model version in every reply.",
        lifespan=lambda app: service.life(),
    )
    app.state.service = service
    add_routes(app)
    add_error_replies(app)
    s = service.settings
    if s.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(s.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=["X-Energy-Joules", "X-Energy-Kind", "X-Model-Version"],
        )
    app.add_middleware(ServeMiddleware, service.metrics, s.max_body_bytes, s.log_requests)
    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory for worker processes (``--workers N``): settings from the environment."""
    import os

    from greentune.serve.settings import SETTINGS_ENV

    return create_app(build_service(ServeSettings.from_json(os.environ[SETTINGS_ENV])))


__all__ = ["KeyStore", "build_service", "create_app", "require"]
