"""The real LIDC-IDRI sets in the shared data folder (see its README): 3-D VOI cubes and 2-D largest slices.

The 3-D cubes are filler (-1024) outside the original VOI. In training (`LidcSource.batch("random")`) it is replaced
by lung-like tissue in three of four examples and left as stored (air, once windowed) in one in four, so the model is
not taught to rely on either; the evaluation measures what effect is left (`filler_invariance`). Labels are per
nodule; patients are split, never nodules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from service.clinical.sections import sections
from service.imaging.preprocess import resample_patch, volume_center_vox, window
from service.runtime.manifest import Preprocessing
from training.model import ATTRIBUTE_LABELS

VOI_FILE = Path("lidc_voi") / "train.npz"
MAXSLICE_FILE = Path("lidc_maxslice") / "train.npz"
FILLER_HU = -1024


@dataclass
class LidcVoi:
    """The 777 3-D nodules, axes (z, y, x), 1 mm voxels."""

    images_hu: np.ndarray  # (N, 64, 64, 64) int16
    valid: np.ndarray  # (N, 64, 64, 64) bool: inside the original VOI
    masks: np.ndarray  # (N, 64, 64, 64) bool: consensus nodule mask
    spacing_mm: float
    malignant: np.ndarray  # (N,) int
    diameter_mm: np.ndarray  # (N,)
    volume_mm3: np.ndarray  # (N,)
    attributes: np.ndarray  # (N, 6) float, ATTRIBUTE_LABELS order, LIDC 1-5 scales
    texture: np.ndarray  # (N,) int
    patient_id: np.ndarray  # (N,) str
    native_spacing: np.ndarray  # (N, 3)

    def __len__(self) -> int:
        return len(self.malignant)

    def subset(self, index: np.ndarray) -> LidcVoi:
        return LidcVoi(**{k: (v[index] if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()})


def load_voi(data_root: Path) -> LidcVoi:
    path = Path(data_root) / VOI_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --data-root (make train DATA=...) must name the shared datasets folder"
        )
    with np.load(path, allow_pickle=False) as d:
        names = [str(n) for n in d["attribute_names"]]
        attrs = d["attributes_maxvote"].astype(np.float32)
        return LidcVoi(
            images_hu=d["images_hu"],
            valid=d["valid"],
            masks=d["masks"],
            spacing_mm=float(d["voxel_spacing_mm"]),
            malignant=d["diagnosis_malignant"].astype(np.int64),
            diameter_mm=d["diameter_mm"].astype(np.float32),
            volume_mm3=d["mask_volume_mm3"].astype(np.float32),
            attributes=np.stack([attrs[:, names.index(n)] for n in ATTRIBUTE_LABELS], axis=1),
            texture=attrs[:, names.index("texture")].astype(np.int64),
            patient_id=d["patient_id"].astype(str),
            native_spacing=d["native_spacing_zyx_mm"].astype(np.float32),
        )


@dataclass
class LidcMaxSlice:
    """The 2,061 nodules as 2-D largest slices with up to four readers' ratings."""

    images_hu: np.ndarray  # (N, 71, 71) float32
    masks: np.ndarray
    pixel_spacing_mm: np.ndarray
    eq_diameter_mm: np.ndarray
    major_axis_mm: np.ndarray
    minor_axis_mm: np.ndarray
    ratings: np.ndarray  # (N, 4, 9), 0 = not rated by that reader
    rating_names: list[str]
    patient_id: np.ndarray

    def mean_rating(self, name: str) -> np.ndarray:
        """Mean over the readers who rated; NaN where none did."""
        r = self.ratings[:, :, self.rating_names.index(name)].astype(np.float32)
        rated = r > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rated.any(1), (r * rated).sum(1) / rated.sum(1), np.nan)


def load_maxslice(data_root: Path) -> LidcMaxSlice:
    with np.load(Path(data_root) / MAXSLICE_FILE, allow_pickle=False) as d:
        return LidcMaxSlice(
            images_hu=(d["images_raw"].astype(np.float32) + d["hu_offset"][:, None, None]),
            masks=d["masks"],
            pixel_spacing_mm=d["pixel_spacing_mm"],
            eq_diameter_mm=d["eq_diameter_mm"],
            major_axis_mm=d["major_axis_mm"],
            minor_axis_mm=d["minor_axis_mm"],
            ratings=d["ratings"],
            rating_names=[str(n) for n in d["rating_names"]],
            patient_id=d["patient_id"].astype(str),
        )


def split_by_patient(patient_id: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, validation) such that no patient is on both sides."""
    patients = np.unique(patient_id)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(patients, size=int(round(len(patients) * val_fraction)), replace=False))
    val = np.array([p in held for p in patient_id])
    return ~val, val


def axial_and_equivalent_diameters(masks: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Per mask (N, z, y, x): the mean diameter of its central axial section, read from its moments as the service
    reads a map (service.clinical.sections), and its volume-equivalent diameter, both of the mask's largest
    connected part; NaN for an empty mask."""
    axial, equivalent = np.full(len(masks), np.nan), np.full(len(masks), np.nan)
    for i, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        if count == 0:
            continue
        part = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        shape = sections(part.astype(np.float64), spacing_mm)
        if shape is not None:
            axial[i] = shape.mean_diameters_mm["axial"]
            equivalent[i] = (float(part.sum()) * spacing_mm**3 * 6.0 / np.pi) ** (1.0 / 3.0)
    return axial, equivalent


def axial_over_equivalent(masks: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Their ratio: above 1 for a nodule lying within the axial plane, below 1 for one pointing along z; what an
    axial size that sees orientation must follow."""
    axial, equivalent = axial_and_equivalent_diameters(masks, spacing_mm)
    return axial / equivalent


def longest_over_mean_diameter(masks: np.ndarray) -> np.ndarray:
    """Per mask (z, y, x, 1 mm voxels), in its largest axial section: the longest (caliper) diameter over the mean
    diameter, the mean of it and the width perpendicular to it, as a reader measures them. Each extent counts whole
    voxels (end to end, not centre to centre)."""
    ratios = []
    for mask in masks:
        section = mask[int(np.argmax(mask.sum(axis=(1, 2))))]
        points = np.argwhere(section).astype(np.float64)
        apart = points[:, None, :] - points[None, :, :]
        i, j = np.unravel_index(np.argmax((apart**2).sum(axis=-1)), apart.shape[:2])
        direction = apart[i, j] / max(float(np.linalg.norm(apart[i, j])), 1e-9)
        across = points @ np.array([-direction[1], direction[0]])
        longest = float(np.linalg.norm(apart[i, j])) + 1.0
        width = float(across.max() - across.min()) + 1.0
        ratios.append(longest / ((longest + width) / 2.0))
    return np.array(ratios)


def type_from_texture(texture: np.ndarray) -> np.ndarray:
    """LIDC texture 1-2 ground glass, 3 part solid, 4-5 solid, as indices into TYPE_LABELS."""
    return np.where(texture >= 4, 0, np.where(texture == 3, 1, 2)).astype(np.int64)


def fill_outside_voi(image_hu: np.ndarray, valid: np.ndarray, background_hu: np.ndarray) -> np.ndarray:
    """The cube with every filler voxel replaced by the background's voxel."""
    return np.where(valid, image_hu, background_hu).astype(np.float32)


def to_model_grid(
    image_hu: np.ndarray, mask: np.ndarray, spacing_mm: float, spec: Preprocessing
) -> tuple[np.ndarray, np.ndarray]:
    """(model input (D, D, D), nodule occupancy at stride 2 (D/2)^3) from a 1 mm cube centred on the nodule."""
    spacing = (spacing_mm,) * 3
    center = volume_center_vox(image_hu.shape)
    cube, _ = resample_patch(image_hu, spacing, center, spec)
    coarse = Preprocessing(
        patch_size=spec.patch_size // 2, spacing_mm=spec.spacing_mm * 2, hu_window=spec.hu_window, fill_hu=0.0
    )
    occ, _ = resample_patch(mask.astype(np.float32), spacing, center, coarse)
    return window(cube, spec), np.clip(occ, 0.0, 1.0)
