"""Clinical outputs next to the model's own: Lung-RADS v2022, the Brock (PanCan) risk, calibrated malignancy
probabilities and their spread over test-time flips. Pure functions of the model's outputs and the request's
clinical inputs; no I/O, no onnxruntime. Research use and decision support only, never a diagnosis."""
