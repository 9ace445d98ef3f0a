"""Request and reply bodies (pydantic): what the OpenAPI document at /openapi.json shows."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Value = float | int | str | bool | None


class ModelRef(BaseModel):
    """Which model answered: in every reply."""

    run: str
    variant: str
    row: str = Field(
        description="The row of the run's table that answered: the network's name, a baseline "
        "or an ensemble"
    )
    version: str = Field(description="12 hex digits of a SHA-256 over the model's files")


class EnergyShare(BaseModel):
    joules: float = Field(description="This request's share of its batch's energy")
    kind: str = Field(description="measured, model (an estimate), mixed, or off")
    batch_size: int = Field(description="Predictions in the forward pass that answered")


class ForecastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[dict[str, Value]] = Field(
        min_length=1,
        description=(
            "Rows with the run's time column, its target(s) and covariates, oldest first. "
            "For origins='last' add the horizon's rows with the known covariates (e.g. the "
            "temperature forecast) and the target empty."
        ),
    )
    origins: Literal["last", "daily"] = Field(
        "last",
        description="'last': the horizon after the last observed target; 'daily': "
        "a backtest from every local midnight",
    )


class ForecastPoint(BaseModel):
    origin: dt.datetime
    time: dt.datetime
    step: int
    values: dict[str, float | None] = Field(
        description="<target>_forecast, <target>_q<level> per quantile, <target>_actual if given"
    )


class ForecastReply(BaseModel):
    model: ModelRef
    forecasts: list[ForecastPoint]
    energy: EnergyShare


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, description="Texts to label")


class Label(BaseModel):
    label: str
    probability: float
    probabilities: dict[str, float]


class ClassifyReply(BaseModel):
    model: ModelRef
    predictions: list[Label]
    energy: EnergyShare


class ModelCard(BaseModel):
    run: str
    task: str
    variant: str
    row: str = Field(description="The served row: the network's name, a baseline or an ensemble")
    network: str | None = Field(None, description="The run's network (its row name)")
    members: list[str] | None = Field(
        None, description="An ensemble of runs: the members the served row reads (RUN/ROW each)"
    )
    version: str
    loaded_at: str
    test_metrics: dict[str, float]
    energy_per_1k_predictions: dict[str, float | str | None] | None = Field(
        description="From the run's evaluation: wh, g_co2e, kind, measured_on"
    )
    served: dict[str, float | int | str]
    """What this process has served since it started."""


class ModelsReply(BaseModel):
    models: list[ModelCard]


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str | None = Field(None, description="Another run directory (default: the served one)")
    variant: str | None = Field(None, description="fp32, int8-dynamic, onnx-int8 or a name")
    row: str | None = Field(
        None, description="A forecasting run's kept row (default: the served one), or 'model'"
    )


class Health(BaseModel):
    status: str
    detail: str | None = None


class ErrorReply(BaseModel):
    detail: str


Responses = dict[int | str, dict[str, Any]]
"""FastAPI's ``responses=``: documented error replies (the OpenAPI tests hold routes to them)."""

ERRORS: Responses = {
    401: {"model": ErrorReply, "description": "No key, or an invalid or revoked one"},
    403: {"model": ErrorReply, "description": "The key lacks this route's scope"},
    413: {"model": ErrorReply, "description": "Body or number of items over the limit"},
    429: {"model": ErrorReply, "description": "Over the key's rate; see Retry-After"},
}
BAD_BODY: Responses = {400: {"model": ErrorReply, "description": "The body is not JSON"}}
PREDICT_ERRORS: Responses = {
    **ERRORS,
    **BAD_BODY,
    404: {"model": ErrorReply, "description": "This service serves the other task"},
    503: {"model": ErrorReply, "description": "Queue full or shutting down; see Retry-After"},
    504: {"model": ErrorReply, "description": "No answer within the deadline"},
}
RELOAD_ERRORS: Responses = {
    **ERRORS,
    **BAD_BODY,
    409: {"model": ErrorReply, "description": "Cannot load that run"},
}
