"""Export a trained Res-MTNet to ONNX in the model store, with a parity check, manifest and model card.

    python -m training.export --checkpoint checkpoints/last.pt --version 1.2.0 \
        [--evaluation checkpoints/evaluation.json] [--store model_store]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from service.runtime.manifest import MODEL_FILE, Calibration, Manifest, Preprocessing, TensorSpec, sha256_of
from training.model import (
    ATTRIBUTE_LABELS,
    MALIGNANCY_LABELS,
    MEASUREMENT_LABELS,
    MEASUREMENT_UNITS,
    OCCUPANCY_LABELS,
    OUTPUT_NAMES,
    TYPE_LABELS,
    ResMTNet,
    ResMTNetConfig,
    count_parameters,
)
from training.model_card import write_model_card
from training.reliability_plot import PLOT_FILE, plot_reliability

MODEL_NAME = "res_mtnet"
INPUT_NAME = "patch"
OPSET = 17
PARITY_LIMIT = 1e-4


def tensor_specs(patch_size: int, spacing_mm: float) -> tuple[list[TensorSpec], list[TensorSpec]]:
    inputs = [
        TensorSpec(
            name=INPUT_NAME,
            shape=[-1, 1, patch_size, patch_size, patch_size],
            description="windowed CT cube, axes (batch, channel, z, y, x), values in [0, 1]",
        )
    ]
    outputs = [
        TensorSpec(name="malignancy", shape=[-1, 2], labels=MALIGNANCY_LABELS, description="probabilities"),
        TensorSpec(name="nodule_type", shape=[-1, 3], labels=TYPE_LABELS, description="probabilities"),
        TensorSpec(
            name="measurements",
            shape=[-1, 3],
            labels=MEASUREMENT_LABELS,
            units=MEASUREMENT_UNITS,
            description="Lung-RADS mean diameter, volume, solid-component mean diameter",
        ),
        TensorSpec(
            name="attributes",
            shape=[-1, len(ATTRIBUTE_LABELS)],
            labels=ATTRIBUTE_LABELS,
            units=["LIDC score 1-5"] * len(ATTRIBUTE_LABELS),
            description="radiologist-style scores",
        ),
        TensorSpec(
            name="occupancy",
            shape=[-1, 2, patch_size // 2, patch_size // 2, patch_size // 2],
            labels=OCCUPANCY_LABELS,
            description=f"fraction of each {spacing_mm * 2:g} mm voxel inside the nodule / its solid part, on the "
            "input cube's grid at stride 2, axes (batch, channel, z, y, x)",
        ),
    ]
    return inputs, outputs


def export_onnx(model: ResMTNet, path: Path) -> None:
    model.eval()
    d = model.config.patch_size
    example = torch.rand(2, 1, d, d, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=OUTPUT_NAMES,
            dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *OUTPUT_NAMES]},
            opset_version=OPSET,
            dynamo=False,
        )


@torch.no_grad()
def parity(model: ResMTNet, path: Path, inputs: np.ndarray) -> dict[str, float]:
    """Max abs difference torch vs onnxruntime (CPU) per output, over the given inputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model.eval()
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    for i in range(0, len(inputs), 16):
        x = inputs[i : i + 16].astype(np.float32)
        ours = session.run(OUTPUT_NAMES, {INPUT_NAME: x})
        ref = model(torch.from_numpy(x))
        for name, a, b in zip(OUTPUT_NAMES, ours, ref, strict=True):
            diff = np.abs(a - b.numpy())
            if name == "measurements":  # mm and mm3: compare relative to magnitude
                diff = diff / np.maximum(np.abs(b.numpy()), 1.0)
            worst[name] = max(worst[name], float(diff.max()))
    return worst


def count_flops(model: nn.Module, patch_size: int) -> int:
    """Multiply-accumulates x 2 of every Conv3d and Linear in one forward pass of one patch."""
    total = 0

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv3d):
            k = module.in_channels // module.groups * int(np.prod(module.kernel_size))
            total += 2 * k * out.numel()
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv3d | nn.Linear)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, patch_size, patch_size, patch_size))
    for h in handles:
        h.remove()
    return total


def cpu_latency_ms(path: Path, patch_size: int, threads: int = 2, runs: int = 50) -> dict[str, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    out: dict[str, float] = {}
    for batch in (1, 16):
        x = np.random.default_rng(0).random((batch, 1) + (patch_size,) * 3, dtype=np.float32)
        session.run(None, {INPUT_NAME: x})
        times = []
        for _ in range(runs if batch == 1 else max(runs // 8, 3)):
            t = time.perf_counter()
            session.run(None, {INPUT_NAME: x})
            times.append(time.perf_counter() - t)
        out[f"ms_per_patch_batch{batch}"] = round(float(np.median(times)) * 1000 / batch, 3)
    out["threads"] = threads
    return out


def _previous_manifest(out_dir: Path) -> Manifest | None:
    try:
        return Manifest.read(out_dir)
    except (OSError, ValueError):
        return None


def _performance(model: ResMTNet, path: Path, previous: Manifest | None, remeasure: bool) -> dict[str, Any]:
    """FLOPs and CPU latency. Re-exporting the very same graph (same sha256) keeps the latency measured before,
    unless asked to remeasure: a timing taken on a busy machine would replace a quiet one."""
    if not remeasure and previous is not None and previous.sha256 == sha256_of(path) and previous.performance:
        return dict(previous.performance)
    d = model.config.patch_size
    return {"flops_per_patch": count_flops(model, d), **cpu_latency_ms(path, d)}


def calibration_from(evaluation: dict[str, Any]) -> Calibration | None:
    """The manifest's calibration from what training.evaluate fitted on the held-out patients, if it did."""
    fitted = evaluation.get("malignancy_calibration")
    if not fitted:
        return None
    return Calibration(temperature=fitted["temperature"], fitted_on=fitted["fitted_on"])


def export_model(
    model: ResMTNet,
    store: Path,
    version: str,
    preprocessing: Preprocessing,
    real_inputs: np.ndarray | None = None,
    training: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    remeasure: bool = False,
) -> Manifest:
    """Write model.onnx, manifest.json and MODEL_CARD.md (and the reliability plot when the evaluation fitted a
    calibration) to store/res_mtnet/<version>/; fail on bad parity."""
    out_dir = store / MODEL_NAME / version
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_FILE
    previous = _previous_manifest(out_dir)
    export_onnx(model, path)
    d = model.config.patch_size
    rng = np.random.default_rng(0)
    random_inputs = rng.random((32, 1, d, d, d), dtype=np.float32)
    checks = {"random": parity(model, path, random_inputs)}
    if real_inputs is not None and len(real_inputs):
        checks["real"] = parity(model, path, real_inputs)
    prob_diff = max(checks[k][n] for k in checks for n in ("malignancy", "nodule_type"))
    if prob_diff > PARITY_LIMIT:
        raise RuntimeError(f"ONNX parity {prob_diff:.2e} exceeds {PARITY_LIMIT:.0e}")
    inputs, outputs = tensor_specs(d, model.config.spacing_mm)
    manifest = Manifest(
        name=MODEL_NAME,
        version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        sha256=sha256_of(path),
        opset=OPSET,
        inputs=inputs,
        outputs=outputs,
        preprocessing=preprocessing,
        training={
            "config": model.config.to_dict(),
            "parameters": count_parameters(model),
            **(training or {}),
        },
        evaluation=evaluation or {},
        export={
            "parity_max_abs_diff_probabilities": prob_diff,
            "parity_by_input": checks,
            "parity_inputs": {
                "random": len(random_inputs),
                "real": 0 if real_inputs is None else len(real_inputs),
            },
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        },
        performance=_performance(model, path, previous, remeasure),
        calibration=calibration_from(evaluation or {}),
    )
    manifest.write(out_dir)
    if manifest.calibration is not None:
        plot_reliability(manifest.evaluation["malignancy_calibration"], out_dir / PLOT_FILE)
    write_model_card(manifest, out_dir)
    return manifest


def load_checkpoint(path: Path) -> tuple[ResMTNet, dict]:
    state = torch.load(path, weights_only=False, map_location="cpu")
    model = ResMTNet(ResMTNetConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.eval(), state


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--store", type=Path, default=Path("model_store"))
    p.add_argument("--evaluation", type=Path, default=None, help="JSON written by training.evaluate")
    p.add_argument("--real-inputs", type=Path, default=None, help=".npy of real model inputs for parity")
    p.add_argument(
        "--remeasure-latency",
        action="store_true",
        help="time the graph again even when it is byte-identical to the one already in the store",
    )
    args = p.parse_args(argv)
    model, state = load_checkpoint(args.checkpoint)
    evaluation = json.loads(args.evaluation.read_text()) if args.evaluation else {}
    real = np.load(args.real_inputs) if args.real_inputs else None
    training = {
        "args": state.get("args", {}),
        "task_weights": state.get("task_weights", {}),
        "epochs": state.get("epoch", -1) + 1,
        "history": state.get("history", [])[-1:],
    }
    manifest = export_model(
        model,
        args.store,
        args.version,
        Preprocessing(**state["preprocessing"]),
        real,
        training,
        evaluation,
        remeasure=args.remeasure_latency,
    )
    print(json.dumps({"version": manifest.version, "sha256": manifest.sha256, **manifest.export}, default=str))


if __name__ == "__main__":
    main()
