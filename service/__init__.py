"""Res-MTNet Serve: the inference service.

onnxruntime's telemetry stays off in every process that uses the service (it would otherwise write a device id
under $HOME and look up Microsoft's collector at start-up, from inside a hospital network). It must be set before
onnxruntime is first imported, hence here.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
