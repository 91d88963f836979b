"""Contender 4, the peer: LitServe serving the same ONNX model with its dynamic batching on.

Tuned fairly: the same onnxruntime session settings as the service, max_batch_size equal to the service's
(RESMTNET_MAX_BATCH_SIZE, 16 on CPU), LITSERVE_WORKERS inference workers (processes, each with its share of the
cores), LitServe's ZeroMQ queue (fast_queue), and the batch timeout given by LITSERVE_BATCH_TIMEOUT (seconds).
bench.serve passes the best of a short sweep of both. On CUDA when RESMTNET_PROVIDER is cuda.

    python -m bench.litserve_app  (port from RESMTNET_PORT, default 8000)
"""

from __future__ import annotations

import os

import litserve as ls
import numpy as np

from bench.peer_model import load_entry, open_session, prepare, to_json


class ResMTNetAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.entry = load_entry()
        self.session = open_session(self.entry, workers=int(os.environ.get("LITSERVE_WORKERS", "1")))
        self.input_name = self.session.get_inputs()[0].name

    def decode_request(self, request) -> np.ndarray:
        upload = request["patch"]
        data = upload.file.read() if hasattr(upload, "file") else upload
        return prepare(data, str(request["spacing"]), self.entry.manifest)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> list[list[np.ndarray]]:
        outputs = self.session.run(None, {self.input_name: x})
        return [[o[i] for o in outputs] for i in range(len(x))]

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: list[np.ndarray]) -> dict:
        return {"nodules": [to_json(self.entry.manifest, output)]}


def main() -> None:
    max_batch = int(os.environ.get("RESMTNET_MAX_BATCH_SIZE", "16"))
    api = ResMTNetAPI(max_batch_size=max_batch, batch_timeout=float(os.environ.get("LITSERVE_BATCH_TIMEOUT", "0.0")))
    workers = int(os.environ.get("LITSERVE_WORKERS", "1"))
    accelerator = "cuda" if os.environ.get("RESMTNET_PROVIDER") == "cuda" else "cpu"
    server = ls.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=workers, fast_queue=True)
    server.run(port=int(os.environ.get("RESMTNET_PORT", "8000")), generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
