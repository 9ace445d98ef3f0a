"""The anchor: the FastAPI app a user writes first — load the model, call it once per request.

uvicorn --factory naive_serve:app --app-dir benchmarks   (GREENTUNE_NAIVE_RUN, _VARIANT)
"""

import os

from fastapi import FastAPI
from pydantic import BaseModel

import greentune as gt


class Texts(BaseModel):
    texts: list[str]


def app() -> FastAPI:
    model = gt.Predictor.from_run(
        os.environ["GREENTUNE_NAIVE_RUN"], os.environ.get("GREENTUNE_NAIVE_VARIANT")
    )
    api = FastAPI()

    @api.post("/v1/classify")
    def classify(body: Texts) -> dict:
        out = model.predict(body.texts)
        return {"predictions": out[["label", "probability"]].to_dict("records")}

    return api
