"""Contender 3, the per-request baseline: a minimal FastAPI endpoint that runs the session once per request, with
no batching. FastAPI runs the synchronous endpoint in its thread pool, so concurrent requests call onnxruntime
concurrently on one session.

    python -m bench.per_request_app  (port from RESMTNET_PORT, default 8000)
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI, File, Form

from bench.peer_model import load_entry, open_session, prepare, to_json

entry = load_entry()
session = open_session(entry)
input_name = session.get_inputs()[0].name
app = FastAPI()


@app.get("/readyz")
def ready() -> dict:
    return {"ready": True}


@app.post("/predict")
def predict(patch: bytes = File(...), spacing: str = Form(...)) -> dict:
    x = prepare(patch, spacing, entry.manifest)[None]
    outputs = session.run(None, {input_name: x})
    return {"nodules": [to_json(entry.manifest, [o[0] for o in outputs])]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("RESMTNET_PORT", "8000")), access_log=False)
