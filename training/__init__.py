import service  # noqa: F401  (first: it turns onnxruntime's telemetry off before any module here imports onnxruntime)
