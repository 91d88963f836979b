"""Export a trained Res-MTNet to ONNX in the model store, with a parity check, manifest and model card.

    python -m training.export --checkpoint checkpoints/last.pt --version 1.3.0 \
        [--evaluation checkpoints/evaluation.json] [--store model_store] [--overwrite]
    python -m training.export --check-only --version 1.3.0      # would the export be allowed? (before training)

A version folder is never rewritten unless --overwrite is given. Everything is written to a hidden folder beside it
and renamed into place only once the parity check has passed, so a failed export leaves the store as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
from service.runtime.versions import VERSION_FORM, is_version
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
from training.provenance import applied_args
from training.reliability_plot import PLOT_FILE, plot_reliability

MODEL_NAME = "res_mtnet"
INPUT_NAME = "patch"
OPSET = 17
PARITY_LIMIT = 1e-4


class ExportError(Exception):
    """The export may not write where it was asked to: not a version, or a version that exists."""


def version_folder(store: Path, version: str, overwrite: bool = False) -> Path:
    """store/res_mtnet/<version>, after checking that the export may write it."""
    if not is_version(version):
        raise ExportError(f"{version!r} is not a version the service would serve ({VERSION_FORM})")
    out_dir = store / MODEL_NAME / version
    if out_dir.exists() and not overwrite:
        raise ExportError(
            f"{out_dir} exists, and a version folder is not rewritten: choose another version "
            "(make train MODEL_VERSION=x.y.z, or training.export --version x.y.z), or replace this one on purpose "
            "(make train OVERWRITE=1, or training.export --overwrite)"
        )
    return out_dir


def _move_into_place(staged: Path, out_dir: Path) -> None:
    """Rename the finished folder to its version; an existing one (overwrite) is renamed aside first."""
    old = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    try:
        staged.rename(out_dir)
    except OSError:
        if old.exists():
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


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
    overwrite: bool = False,
) -> Manifest:
    """Write model.onnx, manifest.json and MODEL_CARD.md (and the reliability plot when the evaluation fitted a
    calibration) to store/res_mtnet/<version>/, all at once; fail on bad parity, or on an existing version unless
    overwrite is given."""
    out_dir = version_folder(store, version, overwrite)
    previous = _previous_manifest(out_dir)
    staged = out_dir.with_name(f".{version}.export-{os.getpid()}")  # hidden: the store skips it
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    try:
        manifest = _write_version(
            model, staged, version, preprocessing, real_inputs, training, evaluation, previous, remeasure
        )
        _move_into_place(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return manifest


def _write_version(
    model: ResMTNet,
    out_dir: Path,
    version: str,
    preprocessing: Preprocessing,
    real_inputs: np.ndarray | None,
    training: dict[str, Any] | None,
    evaluation: dict[str, Any] | None,
    previous: Manifest | None,
    remeasure: bool,
) -> Manifest:
    path = out_dir / MODEL_FILE
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
    p.add_argument("--checkpoint", type=Path, help="required unless --check-only")
    p.add_argument("--version", required=True, help=f"the folder to create: {VERSION_FORM}")
    p.add_argument("--store", type=Path, default=Path("model_store"))
    p.add_argument("--evaluation", type=Path, default=None, help="JSON written by training.evaluate")
    p.add_argument("--real-inputs", type=Path, default=None, help=".npy of real model inputs for parity")
    p.add_argument(
        "--remeasure-latency",
        action="store_true",
        help="time the graph again even when it is byte-identical to the one already in the store",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the version's folder if it exists")
    p.add_argument("--check-only", action="store_true", help="only check that the version may be written")
    args = p.parse_args(argv)
    try:
        version_folder(args.store, args.version, args.overwrite)
    except ExportError as exc:
        raise SystemExit(f"training.export: {exc}") from None
    if args.check_only:
        return
    if args.checkpoint is None:
        p.error("--checkpoint is required unless --check-only is given")
    model, state = load_checkpoint(args.checkpoint)
    evaluation = json.loads(args.evaluation.read_text()) if args.evaluation else {}
    real = np.load(args.real_inputs) if args.real_inputs else None
    training = {
        **applied_args(state.get("args", {}), model.config.to_dict()),
        "provenance": state.get("provenance", {}),
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
        overwrite=args.overwrite,
    )
    print(json.dumps({"version": manifest.version, "sha256": manifest.sha256, **manifest.export}, default=str))


if __name__ == "__main__":
    main()
