"""Synthetic CT nodules with exact ground truth, deterministic by seed.

A phantom nodule is an ellipsoid (random axes and rotation), optionally lobulated (a smooth radial modulation) and
spiculated (thin strands leaving the surface, excluded from size as radiologists exclude them). Its type is solid,
part-solid (ground-glass body with a solid core) or ground-glass. Patches are rendered at a scanner-like anisotropic
spacing with partial volume, blur and noise, on lung background with vessels, then pass through the service's own
preprocessing. Ground truth: Lung-RADS mean diameter (long and short axis of the central axial section), volume by
numerical integration of the shape, solid-component diameter, and malignancy drawn from the Brock (PanCan) model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from service.imaging.preprocess import patch_axes_mm, preprocess
from service.runtime.manifest import Preprocessing

TYPES = ("solid", "part_solid", "ground_glass")
_FIB = 4000  # directions for numerical volume integration


@dataclass(frozen=True)
class Nodule:
    """One phantom nodule; positions in millimetres, axes (z, y, x)."""

    center_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    rotation: np.ndarray  # (3, 3) columns are the ellipsoid's axes in (z, y, x)
    kind: str
    solid_scale: float  # core size relative to the body; 1 for solid, 0 for ground glass
    lobe_dirs: np.ndarray  # (K, 3) unit vectors
    lobe_amp: float
    lobe_freq: float
    spicules: np.ndarray  # (S, 4): direction z, y, x and length in mm
    hu_body: float
    hu_core: float
    diameter_mm: float = 0.0
    volume_mm3: float = 0.0
    solid_diameter_mm: float = 0.0
    malignant: int = 0
    p_malignant: float = 0.0

    def radius(self, u: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Boundary distance along unit directions u (..., 3)."""
        q = u @ self.rotation  # coordinates in the ellipsoid frame
        inv = np.sqrt(np.sum((q / np.asarray(self.semi_axes_mm)) ** 2, axis=-1))
        return scale * self._lobulation(u) / np.maximum(inv, 1e-9)

    def _lobulation(self, u: np.ndarray) -> np.ndarray:
        if self.lobe_amp == 0 or len(self.lobe_dirs) == 0:
            return np.ones(u.shape[:-1])
        dots = u @ self.lobe_dirs.T
        return 1.0 + self.lobe_amp * np.mean(np.cos(self.lobe_freq * np.pi * dots), axis=-1)

    def occupancy(self, axes_mm: list[np.ndarray], voxel_mm: float, scale: float = 1.0) -> np.ndarray:
        """Fraction of each voxel inside the (scaled) body on the grid given by axes_mm; spicules excluded."""
        z, y, x = np.meshgrid(*[a - c for a, c in zip(axes_mm, self.center_mm, strict=True)], indexing="ij")
        p = np.stack([z, y, x], axis=-1)
        dist = np.linalg.norm(p, axis=-1)
        u = p / np.maximum(dist, 1e-9)[..., None]
        r = self.radius(u, scale) if scale > 0 else np.zeros_like(dist)
        return np.clip(0.5 - (dist - r) / voxel_mm, 0.0, 1.0).astype(np.float32)

    def spicule_occupancy(self, axes_mm: list[np.ndarray], voxel_mm: float) -> np.ndarray:
        z, y, x = np.meshgrid(*[a - c for a, c in zip(axes_mm, self.center_mm, strict=True)], indexing="ij")
        p = np.stack([z, y, x], axis=-1)
        occ = np.zeros(p.shape[:-1], dtype=np.float32)
        for sp in self.spicules:
            d = sp[:3]
            start = float(self.radius(d[None], 1.0)[0]) * 0.8
            t = np.clip(p @ d, start, start + sp[3])
            width = 0.5 * (1.0 - (t - start) / (sp[3] + 1e-6)) + 0.25  # tapering strand, mm
            gap = np.linalg.norm(p - t[..., None] * d, axis=-1)
            occ = np.maximum(occ, np.clip(0.5 - (gap - width) / voxel_mm, 0.0, 1.0))
        return occ


def fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(phi), np.sin(phi) * np.sin(theta), np.sin(phi) * np.cos(theta)], axis=1)


def integrated_volume(nodule: Nodule, scale: float = 1.0) -> float:
    """V = (1/3) * integral of r(u)^3 over the sphere of directions."""
    if scale <= 0:
        return 0.0
    u = fibonacci_sphere(_FIB)
    return float(np.mean(nodule.radius(u, scale) ** 3) * 4.0 * np.pi / 3.0)


SECTIONS = {"axial": 0, "coronal": 1, "sagittal": 2}  # the plane normal to z, y or x


def section_mean_diameter(nodule: Nodule, plane: str = "axial", scale: float = 1.0) -> float:
    """Mean diameter, (long axis + perpendicular short axis) / 2, on the nodule's central section in one plane."""
    if scale <= 0:
        return 0.0
    angles = np.linspace(0, np.pi, 360, endpoint=False)
    dirs = np.zeros((len(angles), 3))
    dirs[:, [i for i in range(3) if i != SECTIONS[plane]]] = np.stack([np.sin(angles), np.cos(angles)], axis=1)
    chords = nodule.radius(dirs, scale) + nodule.radius(-dirs, scale)
    k = int(np.argmax(chords))
    return float((chords[k] + chords[(k + 180) % 360]) / 2.0)


def axial_mean_diameter(nodule: Nodule, scale: float = 1.0) -> float:
    """The mean diameter on the central axial section: the phantoms' (and LIDC's) diameter label."""
    return section_mean_diameter(nodule, "axial", scale)


def largest_section_mean_diameter(nodule: Nodule, scale: float = 1.0) -> float:
    """Lung-RADS v2022 size: the mean diameter in the plane (axial, coronal, sagittal) where the nodule is largest."""
    return max(section_mean_diameter(nodule, plane, scale) for plane in SECTIONS)


def brock_probability(diameter_mm: float, kind: str, spiculated: bool, rng: np.random.Generator) -> float:
    """PanCan full model (McWilliams et al., NEJM 2013) with random patient covariates."""
    age = rng.normal(62, 6)
    logit = (
        -6.7892
        + 0.0287 * (age - 62)
        + 0.6011 * rng.integers(0, 2)  # female
        + 0.2961 * (rng.random() < 0.2)  # family history
        + 0.2953 * (rng.random() < 0.3)  # emphysema
        - 5.3854 * ((max(diameter_mm, 1.0) / 10.0) ** -0.5 - 1.58113883)
        + {"solid": 0.0, "part_solid": 0.377, "ground_glass": -0.1276}[kind]
        + 0.6581 * (rng.random() < 0.5)  # upper lobe
        - 0.0824 * (rng.integers(1, 6) - 4)
        + 0.7729 * spiculated
    )
    return 1.0 / (1.0 + math.exp(-logit))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def sample_nodule(
    rng: np.random.Generator,
    center_mm: tuple[float, float, float],
    diameter_range=(3.0, 35.0),
    elongation: tuple[float, float] | None = None,
) -> Nodule:
    """Draw a nodule: log-uniform size, type, shape irregularity; ground truth computed exactly. Axes differ by up
    to about 1.4 times; with `elongation` (lo, hi), one axis is that many times longer than the other two, cigar-like
    (one training phantom in training.defaults.ELONGATED_EVERY, and the evaluation's elongated set)."""
    lo, hi = diameter_range
    d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    ratios = rng.uniform(0.7, 1.0, size=3)
    if elongation is not None:
        ratios = np.array([rng.uniform(*elongation), 1.0, 1.0])
    ratios /= np.cbrt(np.prod(ratios))
    kind = str(rng.choice(TYPES, p=[0.55, 0.25, 0.20]))
    shape_kind = rng.choice(["smooth", "lobulated", "spiculated"], p=[0.45, 0.3, 0.25])
    n_spicules = int(rng.integers(4, 12)) if shape_kind == "spiculated" and d > 6 else 0
    spicules = np.zeros((n_spicules, 4))
    if n_spicules:
        dirs = rng.normal(size=(n_spicules, 3))
        spicules[:, :3] = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        spicules[:, 3] = rng.uniform(0.2, 0.5, n_spicules) * d + 1.5
    lobed = shape_kind != "smooth"
    dirs = rng.normal(size=(5, 3))
    nodule = Nodule(
        center_mm=center_mm,
        semi_axes_mm=tuple(float(v) for v in ratios * d / 2.0),
        rotation=random_rotation(rng),
        kind=kind,
        solid_scale={"solid": 1.0, "part_solid": float(rng.uniform(0.3, 0.75)), "ground_glass": 0.0}[kind],
        lobe_dirs=dirs / np.linalg.norm(dirs, axis=1, keepdims=True),
        lobe_amp=float(rng.uniform(0.08, 0.2)) if lobed else 0.0,
        lobe_freq=float(rng.uniform(1.5, 3.0)),
        spicules=spicules,
        hu_body=float(rng.uniform(0, 60) if kind == "solid" else rng.uniform(-700, -300)),
        hu_core=float(rng.uniform(0, 60)),
    )
    diameter = axial_mean_diameter(nodule)
    p = brock_probability(diameter, kind, n_spicules > 0, rng)
    return _with_truth(nodule, diameter, p, int(rng.random() < p))


def _with_truth(nodule: Nodule, diameter: float, p: float, malignant: int) -> Nodule:
    from dataclasses import replace

    return replace(
        nodule,
        diameter_mm=diameter,
        volume_mm3=integrated_volume(nodule),
        solid_diameter_mm=axial_mean_diameter(nodule, nodule.solid_scale),
        p_malignant=p,
        malignant=malignant,
    )


def render_nodule(volume: np.ndarray, axes_mm: list[np.ndarray], voxel_mm: float, nodule: Nodule) -> None:
    """Paint the nodule into an HU volume in place (partial volume by occupancy blending)."""
    body = nodule.occupancy(axes_mm, voxel_mm)
    if nodule.spicules.size:
        strands = nodule.spicule_occupancy(axes_mm, voxel_mm)
        volume += strands * (max(nodule.hu_body, -100.0) - volume)
    volume += body * (nodule.hu_body - volume)
    if 0 < nodule.solid_scale < 1:
        core = nodule.occupancy(axes_mm, voxel_mm, nodule.solid_scale)
        volume += core * (nodule.hu_core - volume)


def paint_nodule(volume: np.ndarray, spacing: tuple[float, ...], nodule: Nodule, origin_mm=(0.0, 0.0, 0.0)) -> None:
    """Render a nodule into a native-spacing HU volume in place, within its bounding box only.

    Slices are rendered about 0.5 mm thin and averaged over each slice's thickness (partial volume along z).
    Voxel i along an axis sits at origin_mm + i * spacing.
    """
    reach = max(nodule.semi_axes_mm) * (1.0 + nodule.lobe_amp) + float(nodule.spicules[:, 3].max(initial=0.0)) + 3.0
    box = []
    for axis in range(3):
        c = (nodule.center_mm[axis] - origin_mm[axis]) / spacing[axis]
        lo = max(int(math.floor(c - reach / spacing[axis])), 0)
        hi = min(int(math.ceil(c + reach / spacing[axis])) + 1, volume.shape[axis])
        if hi <= lo:
            return
        box.append((lo, hi))
    fine = max(1, int(math.ceil(spacing[0] / 0.5)))
    (z0, z1), (y0, y1), (x0, x1) = box
    z_fine = origin_mm[0] + (np.arange(z0 * fine, z1 * fine) + 0.5) / fine * spacing[0] - spacing[0] / 2.0
    axes = [
        z_fine,
        origin_mm[1] + np.arange(y0, y1) * spacing[1],
        origin_mm[2] + np.arange(x0, x1) * spacing[2],
    ]
    region = np.repeat(volume[z0:z1, y0:y1, x0:x1], fine, axis=0).astype(np.float32)
    render_nodule(region, axes, float(min(spacing[0] / fine, spacing[1])), nodule)
    volume[z0:z1, y0:y1, x0:x1] = region.reshape(z1 - z0, fine, y1 - y0, x1 - x0).mean(axis=1)


def lung_background(shape: tuple[int, ...], spacing: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Lung parenchyma near -850 HU with textured noise and a few vessels, in HU."""
    base = rng.uniform(-900, -800)
    texture = ndimage.gaussian_filter(rng.normal(size=shape), [1.5 / s for s in spacing]) * 60.0
    vol = (base + texture).astype(np.float32)
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    extent = np.array([a[-1] for a in axes])
    z, y, x = np.meshgrid(*axes, indexing="ij")
    p = np.stack([z, y, x], axis=-1)
    voxel = float(min(spacing))
    for _ in range(int(rng.integers(2, 8))):
        point = rng.uniform(0, 1, 3) * extent
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        radius = float(rng.uniform(0.4, 2.5))
        rel = p - point
        gap = np.linalg.norm(rel - (rel @ d)[..., None] * d, axis=-1)
        occ = np.clip(0.5 - (gap - radius) / voxel, 0.0, 1.0)
        vol += occ * (rng.uniform(-20, 60) - vol)
    if rng.random() < 0.15:  # chest wall or mediastinum along one side
        axis, side = int(rng.integers(0, 3)), rng.choice([-1, 1])
        depth = rng.uniform(0.0, 0.12) * extent[axis]
        coord = [z, y, x][axis]
        dist = (extent[axis] - coord) if side > 0 else coord
        occ = np.clip(0.5 - (dist - depth) / voxel, 0.0, 1.0)
        vol += occ * (rng.uniform(20, 60) - vol)
    return vol


def scanner(volume: np.ndarray, spacing: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Point-spread blur and correlated noise as a CT scanner adds them."""
    psf_mm = rng.uniform(0.4, 0.9)
    blurred = ndimage.gaussian_filter(volume, [max(psf_mm / s, 0.3) for s in spacing])
    noise = ndimage.gaussian_filter(rng.normal(size=volume.shape), 0.6) * rng.uniform(20, 60)
    return (blurred + noise).astype(np.float32)


@dataclass
class PhantomPatch:
    image: np.ndarray  # (D, D, D) float32, windowed model input
    occupancy: np.ndarray  # (2, D/2, D/2, D/2) float32: nodule and solid part, at the model's stride 2
    nodule: Nodule
    native_spacing: tuple[float, float, float]
    extra: dict = field(default_factory=dict)


def random_spacing(rng: np.random.Generator) -> tuple[float, float, float]:
    inplane = float(rng.uniform(0.5, 1.0))
    return (float(rng.choice([0.625, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0])), inplane, inplane)


def render_patch(
    seed: int, spec: Preprocessing, diameter_range=(3.0, 35.0), elongation: tuple[float, float] | None = None
) -> PhantomPatch:
    """One training or test example, deterministic by seed, through the service's preprocessing."""
    rng = np.random.default_rng(seed)
    spacing = random_spacing(rng)
    fov = spec.field_of_view_mm + 8.0
    shape = tuple(int(math.ceil(fov / s)) + 1 for s in spacing)
    extent = np.array([(n - 1) * s for n, s in zip(shape, spacing, strict=True)])
    center = tuple(float(v) for v in extent / 2.0 + rng.uniform(-1.5, 1.5, 3))
    nodule = sample_nodule(rng, center, diameter_range, elongation)
    vol = lung_background(shape, spacing, rng)
    paint_nodule(vol, spacing, nodule)
    vol = scanner(vol, spacing, rng)
    # Ask for the patch centred on the nodule, off by a little as a reader's click would be.
    click = np.array(center) + rng.normal(0, 1.0, 3)
    image, _ = preprocess(vol, spacing, click / np.array(spacing), spec)
    coarse = Preprocessing(
        patch_size=spec.patch_size // 2,
        spacing_mm=spec.spacing_mm * 2,
        hu_window=spec.hu_window,
        fill_hu=spec.fill_hu,
    )
    axes = patch_axes_mm(click, coarse)
    occ = np.stack(
        [
            _voxel_average(nodule, axes, coarse.spacing_mm, 1.0),
            _voxel_average(nodule, axes, coarse.spacing_mm, nodule.solid_scale),
        ]
    )
    return PhantomPatch(image=image, occupancy=occ, nodule=nodule, native_spacing=spacing)


def _voxel_average(nodule: Nodule, axes: list[np.ndarray], voxel_mm: float, scale: float) -> np.ndarray:
    """Occupancy averaged over 2^3 sub-voxels: close to the exact fraction of each coarse voxel."""
    if scale <= 0:
        return np.zeros([len(a) for a in axes], dtype=np.float32)
    sub = [np.concatenate([a - voxel_mm / 4, a + voxel_mm / 4]) for a in axes]
    order = [np.argsort(s, kind="stable") for s in sub]
    fine = nodule.occupancy([s[o] for s, o in zip(sub, order, strict=True)], voxel_mm / 2, scale)
    n = [len(a) for a in axes]
    return fine.reshape(n[0], 2, n[1], 2, n[2], 2).mean(axis=(1, 3, 5))
