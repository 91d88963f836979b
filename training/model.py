"""Res-MTNet: a residual 3-D trunk shared by four task heads (after arXiv 2502.19692).

Reads top to bottom. Shapes for the default config (D = 32, widths 16/32/64):

    x            (N, 1, 32, 32, 32)   windowed CT cube at 1.25 mm
    stem         (N, 16, 16, 16, 16)  stride-2 conv
    stage 1..3   (N, 16, 16^3) -> (N, 32, 8^3) -> (N, 64, 4^3)   residual blocks
    decoder      (N, 16, 16^3)        top-down path (feature pyramid) back to stride 2
    occupancy    (N, 2, 16^3)         fraction of each 2.5 mm voxel inside the nodule / its solid part
    features     (N, 64 + 16 + 2)     global pool of stage 3, occupancy-weighted pool, log sizes

Heads, one ONNX output each: malignancy (N, 2) and nodule_type (N, 3) as probabilities; measurements (N, 3) =
diameter_mm, volume_mm3, solid_diameter_mm; attributes (N, 6) = LIDC scores in [1, 5]; and the occupancy map itself
(N, 2, 16^3), from which the service reads the nodule's shape. Volumes are the sum of the occupancy map, so they come
from the image's own voxels; diameters scale the occupancy's equivalent diameter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

MALIGNANCY_LABELS = ["benign", "malignant"]
TYPE_LABELS = ["solid", "part_solid", "ground_glass"]
MEASUREMENT_LABELS = ["diameter_mm", "volume_mm3", "solid_diameter_mm"]
MEASUREMENT_UNITS = ["mm", "mm3", "mm"]
ATTRIBUTE_LABELS = ["subtlety", "lobulation", "sphericity", "margin", "spiculation", "texture"]
OUTPUT_NAMES = ["malignancy", "nodule_type", "measurements", "attributes", "occupancy"]
OCCUPANCY_LABELS = ["nodule", "solid_part"]


@dataclass
class ResMTNetConfig:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    patch_size: int = 32
    spacing_mm: float = 1.25
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1])
    head_hidden: int = 64
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
    )


class ResidualBlock(nn.Module):
    """Two 3x3x3 convolutions with an identity (or strided 1x1x1) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, stride)
        self.conv2 = _conv_bn(c_out, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class ResMTNet(nn.Module):
    def __init__(self, config: ResMTNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ResMTNetConfig()
        w = cfg.widths
        self.stem = nn.Sequential(_conv_bn(1, w[0], stride=2), nn.ReLU(inplace=True))
        stages, c_in = [], w[0]
        for i, (width, depth) in enumerate(zip(w, cfg.blocks, strict=True)):
            blocks = [ResidualBlock(c_in, width, stride=1 if i == 0 else 2)]
            blocks += [ResidualBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.ModuleList(stages)
        # Top-down path: lateral 1x1 projections to w[0], upsample and add, one smoothing conv.
        self.laterals = nn.ModuleList(nn.Conv3d(width, w[0], 1) for width in w)
        self.smooth = nn.Sequential(_conv_bn(w[0], w[0]), nn.ReLU(inplace=True))
        self.occupancy = nn.Conv3d(w[0], 2, 1)
        nn.init.constant_(self.occupancy.bias, -4.0)  # start from "almost nothing is nodule"
        n_features = w[-1] + w[0] + 2
        self.shared = nn.Sequential(
            nn.Linear(n_features, cfg.head_hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)
        )
        self.malignancy = nn.Linear(cfg.head_hidden + 2, 2)
        self.nodule_type = nn.Linear(cfg.head_hidden, 3)
        self.size_correction = nn.Linear(cfg.head_hidden + 2, 3)
        self.attributes = nn.Linear(cfg.head_hidden + 2, len(ATTRIBUTE_LABELS))
        self.coarse_voxel_mm3 = (cfg.spacing_mm * 2) ** 3

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (pooled trunk features, occupancy logits at stride 2, decoder features)."""
        feats = []
        h = self.stem(x)  # (N, w0, D/2, D/2, D/2)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        top = self.laterals[-1](feats[-1])
        for level in range(len(feats) - 2, -1, -1):
            top = F.interpolate(top, size=feats[level].shape[2:], mode="trilinear", align_corners=False)
            top = top + self.laterals[level](feats[level])
        decoded = self.smooth(top)  # (N, w0, D/2, D/2, D/2)
        pooled = feats[-1].mean(dim=(2, 3, 4))  # (N, w_last)
        return pooled, self.occupancy(decoded), decoded

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All outputs as logits or raw values, plus the occupancy map, for the loss."""
        pooled, occ_logits, decoded = self.trunk(x)
        occ = torch.sigmoid(occ_logits)  # (N, 2, D/2, D/2, D/2)
        volumes = occ.sum(dim=(2, 3, 4)) * self.coarse_voxel_mm3  # (N, 2): nodule, solid part
        eq_diam = torch.pow(volumes * (6.0 / math.pi) + 1e-3, 1.0 / 3.0)  # (N, 2)
        log_sizes = torch.log1p(eq_diam)
        weights = occ[:, :1]
        focus = (decoded * weights).sum(dim=(2, 3, 4)) / (weights.sum(dim=(2, 3, 4)) + 1e-3)  # (N, w0)
        hidden = self.shared(torch.cat([pooled, focus, log_sizes], dim=1))
        with_sizes = torch.cat([hidden, log_sizes], dim=1)
        corr = 0.5 * torch.tanh(self.size_correction(with_sizes))  # (N, 3), log-scale corrections
        measurements = torch.stack(
            [
                eq_diam[:, 0] * torch.exp(corr[:, 0]),
                volumes[:, 0] * torch.exp(corr[:, 1]),
                eq_diam[:, 1] * torch.exp(corr[:, 2]),
            ],
            dim=1,
        )
        return {
            "malignancy": self.malignancy(with_sizes),
            "nodule_type": self.nodule_type(hidden),
            "measurements": measurements,
            "attributes": 1.0 + 4.0 * torch.sigmoid(self.attributes(with_sizes)),
            "occupancy_logits": occ_logits,
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The exported graph: (malignancy, nodule_type, measurements, attributes, occupancy), softmax and sigmoid
        inside."""
        out = self.forward_train(x)
        return (
            torch.softmax(out["malignancy"], dim=1),
            torch.softmax(out["nodule_type"], dim=1),
            out["measurements"],
            out["attributes"],
            torch.sigmoid(out["occupancy_logits"]),
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
