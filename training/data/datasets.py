"""Training examples from phantoms and LIDC as tensors with per-task label masks.

Every example carries every target; a mask of 0 marks a label that its source does not have, so the loss ignores
it (no data set has every label). Phantoms are rendered once (in parallel, cached on disk); LIDC cubes get a fresh
fill outside their VOI every epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from service.runtime.manifest import Preprocessing
from training.data.lidc import LidcVoi, fill_outside_voi, to_model_grid, type_from_texture
from training.data.phantoms import TYPES, lung_background, render_patch
from training.defaults import TRAIN_ELONGATION
from training.model import ATTRIBUTE_LABELS

N_ATTR = len(ATTRIBUTE_LABELS)


@dataclass
class Batch:
    """Stacked examples; every *_mask is a per-example (or per-target) weight in [0, 1]."""

    image: torch.Tensor  # (N, 1, D, D, D)
    occupancy: torch.Tensor  # (N, 2, D/2, D/2, D/2)
    occupancy_mask: torch.Tensor  # (N, 2)
    malignant: torch.Tensor  # (N,) long
    malignant_mask: torch.Tensor  # (N,)
    nodule_type: torch.Tensor  # (N,) long
    type_mask: torch.Tensor  # (N,)
    measurements: torch.Tensor  # (N, 3) diameter_mm, volume_mm3, solid_diameter_mm
    measurements_mask: torch.Tensor  # (N, 3)
    attributes: torch.Tensor  # (N, 6)
    attributes_mask: torch.Tensor  # (N, 6)

    def __len__(self) -> int:
        return self.image.shape[0]

    def index(self, idx: torch.Tensor | np.ndarray) -> Batch:
        return Batch(**{k: v[idx] for k, v in vars(self).items()})

    @staticmethod
    def concat(parts: list[Batch]) -> Batch:
        return Batch(**{k: torch.cat([getattr(p, k) for p in parts]) for k in vars(parts[0])})


def _phantom_example(
    args: tuple[int, dict, tuple[float, float] | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seed, spec_json, elongation = args
    p = render_patch(seed, Preprocessing.model_validate(spec_json), elongation=elongation)
    n = p.nodule
    labels = np.array(
        [n.malignant, TYPES.index(n.kind), n.diameter_mm, n.volume_mm3, n.solid_diameter_mm], dtype=np.float32
    )
    return p.image.astype(np.float16), p.occupancy.astype(np.float16), labels


def phantom_set(
    seeds: list[int], spec: Preprocessing, cache_dir: Path | None = None, workers: int = 0, elongated_every: int = 0
) -> Batch:
    """Render (or load from cache) one phantom example per seed; with elongated_every n, the seeds divisible by n
    are cigar-like nodules (TRAIN_ELONGATION)."""

    def elongation(seed: int) -> tuple[float, float] | None:
        return TRAIN_ELONGATION if elongated_every and seed % elongated_every == 0 else None

    mix = [elongated_every, TRAIN_ELONGATION] if elongated_every else []
    key = hashlib.sha256(json.dumps([seeds[0], seeds[-1], len(seeds), spec.model_dump(), *mix]).encode()).hexdigest()
    cache = Path(cache_dir) / f"phantoms-{key[:16]}.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache) as d:
            images, occ, labels = d["images"], d["occupancy"], d["labels"]
    else:
        jobs = [(s, spec.model_dump(), elongation(s)) for s in seeds]
        n_workers = workers or max(os.cpu_count() or 1, 1)
        with ProcessPoolExecutor(n_workers) as pool:
            rows = list(pool.map(_phantom_example, jobs, chunksize=32))
        images = np.stack([r[0] for r in rows])
        occ = np.stack([r[1] for r in rows])
        labels = np.stack([r[2] for r in rows])
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, images=images, occupancy=occ, labels=labels)
    return _phantom_batch(images, occ, labels)


def _phantom_batch(images: np.ndarray, occ: np.ndarray, labels: np.ndarray) -> Batch:
    n = len(labels)
    kind = torch.from_numpy(labels[:, 1]).long()
    solid_known = torch.ones(n)
    return Batch(
        image=torch.from_numpy(images).unsqueeze(1),
        occupancy=torch.from_numpy(occ),
        occupancy_mask=torch.ones(n, 2),
        malignant=torch.from_numpy(labels[:, 0]).long(),
        # Phantom malignancy is a draw from a risk model, noisy by construction: a small weight.
        malignant_mask=torch.full((n,), 0.2),
        nodule_type=kind,
        type_mask=torch.ones(n),
        measurements=torch.from_numpy(labels[:, 2:5].copy()),
        measurements_mask=torch.stack([torch.ones(n), torch.ones(n), solid_known], dim=1),
        attributes=torch.full((n, N_ATTR), 3.0),
        attributes_mask=torch.zeros(n, N_ATTR),
    )


class LidcSource:
    """LIDC nodules on the model grid, with the filler outside each VOI replaced anew on every call."""

    def __init__(self, voi: LidcVoi, spec: Preprocessing, seed: int, bank_size: int = 48) -> None:
        self.voi, self.spec = voi, spec
        self.rng = np.random.default_rng(seed)
        shape = voi.images_hu.shape[1:]
        spacing = (voi.spacing_mm,) * 3
        self.bank = [lung_background(shape, spacing, self.rng).astype(np.int16) for _ in range(bank_size)]

    def background(self, rng: np.random.Generator) -> np.ndarray:
        """A lung-like volume, randomly flipped, from the bank."""
        bg = self.bank[int(rng.integers(len(self.bank)))]
        return np.flip(bg, axis=tuple(int(a) for a in np.nonzero(rng.random(3) < 0.5)[0]))

    def batch(self, fill: str = "random") -> Batch:
        """All nodules; fill is 'random' (training), 'lung', or 'filler' (the cubes as stored)."""
        images, occs = [], []
        for i in range(len(self.voi)):
            choice = fill if fill != "random" else ("filler" if self.rng.random() < 0.25 else "lung")
            hu = self.voi.images_hu[i]
            if choice == "lung":
                hu = fill_outside_voi(hu, self.voi.valid[i], self.background(self.rng))
            image, occ = to_model_grid(hu, self.voi.masks[i], self.voi.spacing_mm, self.spec)
            images.append(image)
            occs.append(np.stack([occ, np.zeros_like(occ)]))
        return self._as_batch(np.stack(images), np.stack(occs))

    def _as_batch(self, images: np.ndarray, occ: np.ndarray) -> Batch:
        v, n = self.voi, len(self.voi)
        return Batch(
            image=torch.from_numpy(images).unsqueeze(1),
            occupancy=torch.from_numpy(occ),
            occupancy_mask=torch.tensor([[1.0, 0.0]]).repeat(n, 1),
            malignant=torch.from_numpy(v.malignant),
            malignant_mask=torch.ones(n),
            nodule_type=torch.from_numpy(type_from_texture(v.texture)),
            type_mask=torch.full((n,), 0.5),
            measurements=torch.from_numpy(np.stack([v.diameter_mm, v.volume_mm3, np.zeros(n, np.float32)], axis=1)),
            measurements_mask=torch.tensor([[1.0, 1.0, 0.0]]).repeat(n, 1),
            attributes=torch.from_numpy(v.attributes),
            attributes_mask=torch.ones(n, N_ATTR),
        )


def augment(image: torch.Tensor, occupancy: torch.Tensor, generator: torch.Generator, max_shift: int = 0) -> tuple:
    """Random flips of z, y, x and a y/x transpose, each per example; axial measurements are unchanged.
    With max_shift > 0, each example also moves by up to max_shift coarse voxels (2x that in input voxels) per axis,
    as an off-centre click would move it."""
    n = image.shape[0]
    flips = torch.rand(n, 4, generator=generator) < 0.5
    image, occupancy = image.clone(), occupancy.clone()
    for axis in range(3):
        idx = flips[:, axis]
        if idx.any():
            image[idx] = image[idx].flip(axis + 2)
            occupancy[idx] = occupancy[idx].flip(axis + 2)
    idx = flips[:, 3]
    if idx.any():
        image[idx] = image[idx].transpose(3, 4)
        occupancy[idx] = occupancy[idx].transpose(3, 4)
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (n, 3), generator=generator)
        for i in range(n):
            s = [int(v) for v in shifts[i]]
            if any(s):
                image[i] = image[i].roll([2 * v for v in s], dims=(1, 2, 3))
                occupancy[i] = occupancy[i].roll(s, dims=(1, 2, 3))
    return image, occupancy
