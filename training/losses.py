"""The multi-task loss: one term per task, each averaged over the examples that carry its label."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.data.datasets import Batch

# Fixed task weights (recorded in the manifest). Sizes and occupancy dominate because they drive every head.
TASK_WEIGHTS = {
    "occupancy": 1.0,
    "measurements": 1.0,
    "malignancy": 1.0,
    "nodule_type": 0.5,
    "attributes": 0.5,
}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values weighted by mask; exactly zero (with a gradient path) when nothing is labelled."""
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def task_losses(
    out: dict[str, torch.Tensor], batch: Batch, malignancy_smoothing: float = 0.0
) -> dict[str, torch.Tensor]:
    occ = F.binary_cross_entropy_with_logits(out["occupancy_logits"], batch.occupancy, reduction="none")
    occ = occ.mean(dim=(2, 3, 4)) * 10.0  # (N, 2)
    log_pred = torch.log1p(out["measurements"])
    log_true = torch.log1p(batch.measurements)
    meas = F.smooth_l1_loss(log_pred, log_true, reduction="none", beta=0.05)  # (N, 3)
    mal = F.cross_entropy(out["malignancy"], batch.malignant, reduction="none", label_smoothing=malignancy_smoothing)
    kind = F.cross_entropy(out["nodule_type"], batch.nodule_type, reduction="none")
    attrs = F.smooth_l1_loss(out["attributes"], batch.attributes, reduction="none", beta=0.5)
    return {
        "occupancy": _masked_mean(occ, batch.occupancy_mask),
        "measurements": _masked_mean(meas, batch.measurements_mask) * 4.0,
        "malignancy": _masked_mean(mal, batch.malignant_mask),
        "nodule_type": _masked_mean(kind, batch.type_mask),
        "attributes": _masked_mean(attrs, batch.attributes_mask),
    }


def total_loss(losses: dict[str, torch.Tensor], weights: dict[str, float] | None = None) -> torch.Tensor:
    weights = weights or TASK_WEIGHTS
    return sum(weights[name] * value for name, value in losses.items())  # type: ignore[return-value]
