"""Predictions of a PyTorch Res-MTNet on a Batch, and the few metrics printed after each epoch."""

from __future__ import annotations

import numpy as np
import torch

from training.data.datasets import Batch, LidcSource
from training.metrics import mae, roc_auc
from training.model import OUTPUT_NAMES, ResMTNet


@torch.no_grad()
def predict(model: ResMTNet, images: torch.Tensor, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The exported graph's outputs by name, as numpy, for a stack of (N, 1, D, D, D) inputs."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    for i in range(0, len(images), batch_size):
        outs = model(images[i : i + batch_size].float())
        for key, value in zip(parts, outs, strict=True):
            parts[key].append(value.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def quick_metrics(model: ResMTNet, phantoms: Batch | None, lidc: LidcSource | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if phantoms is not None:
        p = predict(model, phantoms.image)
        out["phantom_diameter_mae"] = round(mae(p["measurements"][:, 0], phantoms.measurements[:, 0].numpy()), 3)
        rel = np.abs(p["measurements"][:, 1] / phantoms.measurements[:, 1].numpy() - 1)
        out["phantom_volume_median_rel"] = round(float(np.median(rel)), 3)
        kind = p["nodule_type"].argmax(1) == phantoms.nodule_type.numpy()
        out["phantom_type_acc"] = round(float(kind.mean()), 3)
    if lidc is not None:
        batch = lidc.batch("lung")
        p = predict(model, batch.image)
        out["lidc_auc"] = round(roc_auc(batch.malignant.numpy(), p["malignancy"][:, 1]), 4)
        out["lidc_diameter_auc"] = round(roc_auc(batch.malignant.numpy(), p["measurements"][:, 0]), 4)
        out["lidc_diameter_mae"] = round(mae(p["measurements"][:, 0], batch.measurements[:, 0].numpy()), 3)
        out["lidc_attr_mae"] = round(mae(p["attributes"], batch.attributes.numpy()), 3)
    return out
