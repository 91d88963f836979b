"""Evaluate a checkpoint on data it never trained on; writes the JSON the manifest and model card carry.

    python -m training.evaluate --checkpoint checkpoints/last.pt --out checkpoints/evaluation.json

- LIDC patients held out (training.defaults split): malignancy ROC AUC (label diagnosis_malignant) with a bootstrap
  95% interval next to the AUC of the model's own diameter estimate; diameter MAE; MAE of the six scores.
- Split headroom: what the readers' own diameter and scores reach on these patients, without any model.
- Filler invariance: the same held-out nodules with the stored filler, and with two different lung-like fills.
- Calibration of P(malignant) on the held-out patients: temperature scaling, ECE before and after (cross-fitted by
  patient, training/calibration.py); how often the spiculation threshold of the clinical rules fires.
- Orientation on real nodules: whether the diameter head (and the readers' label) follows how a held-out nodule
  lies, judged by its consensus mask's axial section against its volume-equivalent diameter.
- Held-out phantoms (seeds never used in training): diameter MAE for 4-30 mm nodules, volume median relative
  error, type accuracy, solid-component error on part-solid nodules.
- Largest-section size (what Lung-RADS reads, service.clinical.sections) on held-out phantoms and on elongated ones
  (one axis 1.5-2.8 times the others, seeds never trained on): its error against the exact largest-section
  mean diameter, next to the axial diameter alone, and how often the size category (solid thresholds) comes out
  too low; the diameter head against the exact axial mean diameter, and on elongated phantoms by where their long
  axis points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.clinical.features import SPICULATION_THRESHOLD
from service.clinical.lung_rads import categorize, round_mean_diameter
from service.clinical.sections import ELONGATED, in_largest_section, sections
from training.calibration import calibration_report
from training.data.datasets import LidcSource, phantom_set
from training.data.lidc import LidcVoi, axial_and_equivalent_diameters, load_voi, split_by_patient
from training.data.phantoms import PhantomPatch, largest_section_mean_diameter, render_patch
from training.defaults import PHANTOM_TEST_SEED, PREPROCESSING, VAL_FRACTION
from training.export import load_checkpoint
from training.metrics import bootstrap_interval, fit_logistic, mae, mae_interval, roc_auc
from training.model import ATTRIBUTE_LABELS, TYPE_LABELS, ResMTNet
from training.quick_eval import predict


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


def evaluate_lidc(model: ResMTNet, source: LidcSource) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    batch = source.batch("lung")
    p = predict(model, batch.image)
    y = batch.malignant.numpy()
    score, diam = p["malignancy"][:, 1], p["measurements"][:, 0]
    true_d = batch.measurements[:, 0].numpy()
    attr_err = np.abs(p["attributes"] - batch.attributes.numpy()).mean(axis=0)
    result = {
        "nodules": int(len(y)),
        "patients": int(len(np.unique(source.voi.patient_id))),
        "malignant": int(y.sum()),
        "malignancy_auc": _r(roc_auc(y, score)),
        "malignancy_auc_ci95": [_r(v) for v in bootstrap_interval(y, score)],
        "own_diameter_auc": _r(roc_auc(y, diam)),
        "own_diameter_auc_ci95": [_r(v) for v in bootstrap_interval(y, diam)],
        "diameter_mae_mm": _r(mae(diam, true_d), 3),
        "diameter_mae_mm_ci95": [_r(v, 3) for v in mae_interval(diam, true_d)],
        "volume_median_rel_error": _r(
            np.median(np.abs(p["measurements"][:, 1] / batch.measurements[:, 1].numpy() - 1))
        ),
        "attribute_mae": {n: _r(v, 3) for n, v in zip(ATTRIBUTE_LABELS, attr_err, strict=True)},
        "attribute_mae_mean": _r(attr_err.mean(), 3),
    }
    return result, p


def filler_invariance(model: ResMTNet, source: LidcSource) -> dict[str, Any]:
    """How much answers move when the filler outside each VOI is replaced by lung-like tissue."""
    runs = [predict(model, source.batch(fill).image) for fill in ("filler", "lung", "lung")]
    out: dict[str, Any] = {"nodules": len(source.voi), "compared": "stored filler vs two lung-like fills"}
    for name, (a, b) in {"filler_vs_lung": (runs[0], runs[1]), "lung_vs_lung": (runs[1], runs[2])}.items():
        dm = np.abs(a["malignancy"][:, 1] - b["malignancy"][:, 1])
        dd = np.abs(a["measurements"][:, 0] - b["measurements"][:, 0])
        out[name] = {
            "malignancy_abs_diff_mean": _r(dm.mean()),
            "malignancy_abs_diff_p95": _r(np.percentile(dm, 95)),
            "diameter_abs_diff_mean_mm": _r(dd.mean(), 3),
            "diameter_abs_diff_p95_mm": _r(np.percentile(dd, 95), 3),
        }
    return out


def spiculation_flag(p: dict[str, np.ndarray], voi: LidcVoi) -> dict[str, Any]:
    """How often the model's spiculation score reaches the clinical rules' threshold, against the readers' score."""
    col = ATTRIBUTE_LABELS.index("spiculation")
    flagged = p["attributes"][:, col] >= SPICULATION_THRESHOLD
    readers = voi.attributes[:, col] >= 3
    return {
        "threshold": SPICULATION_THRESHOLD,
        "flagged": int(flagged.sum()),
        "flagged_reader_score_3_or_more": int((flagged & readers).sum()),
        "reader_score_3_or_more": int(readers.sum()),
        "model_score_max": _r(p["attributes"][:, col].max(), 3),
    }


def evaluate_phantoms(model: ResMTNet, n: int, cache_dir: Path | None) -> dict[str, Any]:
    seeds = list(range(PHANTOM_TEST_SEED, PHANTOM_TEST_SEED + n))
    batch = phantom_set(seeds, PREPROCESSING, cache_dir)
    p = predict(model, batch.image)
    true = batch.measurements.numpy()
    pred = p["measurements"]
    in_range = (true[:, 0] >= 4) & (true[:, 0] <= 30)
    kind = batch.nodule_type.numpy()
    part = kind == TYPE_LABELS.index("part_solid")
    rel_vol = np.abs(pred[:, 1] / true[:, 1] - 1)
    return {
        "phantoms": n,
        "seeds": [seeds[0], seeds[-1]],
        "diameter_mae_mm_4_30": _r(mae(pred[in_range, 0], true[in_range, 0]), 3),
        "diameter_mae_mm_4_30_ci95": [_r(v, 3) for v in mae_interval(pred[in_range, 0], true[in_range, 0])],
        "nodules_4_30": int(in_range.sum()),
        "volume_median_rel_error": _r(np.median(rel_vol)),
        "volume_median_rel_error_4_30": _r(np.median(rel_vol[in_range])),
        "type_accuracy": _r((p["nodule_type"].argmax(1) == kind).mean()),
        "type_accuracy_ci95": [
            _r(v)
            for v in bootstrap_interval(
                kind, p["nodule_type"].argmax(1), statistic=lambda a, b: float((a == b).mean()), n=1000
            )
        ],
        "solid_diameter_mae_mm_part_solid": _r(mae(pred[part, 2], true[part, 2]), 3),
        "part_solid_nodules": int(part.sum()),
        "malignancy_auc_vs_drawn_label": _r(roc_auc(batch.malignant.numpy(), p["malignancy"][:, 1])),
    }


def lidc_sections(model: ResMTNet, source: LidcSource) -> dict[str, Any]:
    """On real nodules, where only the axial diameter is labelled: how often, and by how much, the largest-section
    size exceeds the axial one."""
    axial, largest, noted = largest_section_sizes(model, source.batch("lung").image)
    factor = largest / np.maximum(axial, 1e-6)
    return {
        "nodules": len(axial),
        "elongation_noted": int(noted.sum()),
        "largest_not_axial": int((factor > 1.0).sum()),
        "factor_median": _r(float(np.median(factor)), 3),
        "factor_p90": _r(float(np.quantile(factor, 0.9)), 3),
        "factor_max": _r(float(factor.max()), 3),
    }


def lidc_orientation(diameter: np.ndarray, voi: LidcVoi) -> dict[str, Any]:
    """Whether the diameter head follows a real nodule's orientation, judged by its consensus mask: the slope of
    log(diameter / the mask's volume-equivalent diameter) against log(the mask's axial section / that diameter).
    1 is an axial size that sees orientation; 0 one that reads every nodule as a sphere of its volume. The readers'
    diameter label, next to it, shows what training on it teaches. Empty masks are counted and left out."""
    axial, equivalent = axial_and_equivalent_diameters(voi.masks, voi.spacing_mm)
    measured = np.isfinite(axial)
    axial, equivalent, diameter, label = (a[measured] for a in (axial, equivalent, diameter, voi.diameter_mm))
    ratio = axial / equivalent

    def slope(size: np.ndarray) -> float:
        return _r(np.polyfit(np.log(ratio), np.log(size / equivalent), 1)[0], 3)

    def mean(values: np.ndarray) -> float | None:
        return _r(float(values.mean()), 3) if values.size else None

    groups = {
        "within_axial_plane": ratio >= 1.1,
        "in_between": (ratio > 0.95) & (ratio < 1.1),
        "towards_z": ratio <= 0.95,
    }
    return {
        "nodules": int(measured.sum()),
        "masks_empty": int((~measured).sum()),
        "slope_diameter_head": slope(diameter),
        "slope_reader_label": slope(label),
        "by_mask_shape": {
            name: {
                "nodules": int(m.sum()),
                "axial_section_over_equivalent": mean(ratio[m]),
                "head_over_label": mean(diameter[m] / label[m]),
                "head_over_mask_axial_section": mean(diameter[m] / axial[m]),
            }
            for name, m in groups.items()
        },
    }


def split_headroom(voi: LidcVoi, alternative_splits: int = 20) -> dict[str, Any]:
    """How far the held-out patients let any size-and-scores ranker go, from the readers' own labels (no model):
    the true diameter alone; a logistic model on the true diameter and the six true reader scores, fitted on the
    training patients; and the true diameter's AUC on other random patient splits of the same size."""
    train, val = split_by_patient(voi.patient_id, VAL_FRACTION, seed=0)
    y = voi.malignant
    features = np.column_stack([np.log(voi.diameter_mm), voi.attributes])
    mean, std = features[train].mean(axis=0), features[train].std(axis=0) + 1e-6
    w, b = fit_logistic((features[train] - mean) / std, y[train])
    oracle = (features[val] - mean) / std @ w + b
    others = [
        roc_auc(y[v], voi.diameter_mm[v])
        for v in (split_by_patient(voi.patient_id, VAL_FRACTION, seed=s)[1] for s in range(1, alternative_splits + 1))
    ]
    this = roc_auc(y[val], voi.diameter_mm[val])
    return {
        "true_diameter_auc": _r(this),
        "true_diameter_auc_ci95": [_r(v) for v in bootstrap_interval(y[val], voi.diameter_mm[val])],
        "true_diameter_and_reader_scores_auc": _r(roc_auc(y[val], oracle)),
        "true_diameter_auc_all_patients": _r(roc_auc(y, voi.diameter_mm)),
        "true_diameter_auc_other_splits": {
            "splits": alternative_splits,
            "min": _r(min(others)),
            "median": _r(float(np.median(others))),
            "max": _r(max(others)),
            "splits_harder_than_this": int(sum(v < this for v in others)),
        },
    }


ELONGATION = (1.5, 2.8)
ELONGATED_SEED = 20_000_000  # never used in training


def largest_section_sizes(model: ResMTNet, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the model's axial mean diameter, the size the service's Lung-RADS reads, whether the answer gets the
    elongation note) per input."""
    p = predict(model, images)
    voxel_mm = PREPROCESSING.spacing_mm * PREPROCESSING.patch_size / p["occupancy"].shape[-1]
    axial = p["measurements"][:, 0]
    shapes = [sections(o[0], voxel_mm) for o in p["occupancy"]]
    largest = np.array([in_largest_section(float(d), s) for d, s in zip(axial, shapes, strict=True)])
    noted = np.array([s is not None and s.elongation >= ELONGATED for s in shapes])
    return axial, largest, noted


def _size_agreement(axial: np.ndarray, largest: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    def category(d: np.ndarray) -> np.ndarray:  # by the solid nodule thresholds; "2" < "3" < "4A" < "4B"
        return np.array([categorize("solid", round_mean_diameter(v))[0] for v in d])

    out: dict[str, Any] = {"nodules_4_30": len(truth)}
    for name, pred in (("axial_diameter", axial), ("largest_section", largest)):
        out[name] = {
            "mae_mm": _r(mae(pred, truth), 3),
            "mae_mm_ci95": [_r(v, 3) for v in mae_interval(pred, truth)],
            "bias_mm": _r(float(np.mean(pred - truth)), 3),
            "size_category_agreement": _r(float(np.mean(category(pred) == category(truth)))),
            "size_category_too_low": _r(float(np.mean(category(pred) < category(truth)))),
        }
    return out


def evaluate_sections(model: ResMTNet, n: int, seed: int, elongation: tuple[float, float] | None) -> dict[str, Any]:
    """Largest-section size against the exact largest-section mean diameter on n phantoms (4-30 mm kept)."""
    patches = [render_patch(seed + i, PREPROCESSING, elongation=elongation) for i in range(n)]
    truth = np.array([largest_section_mean_diameter(p.nodule) for p in patches])
    axial_truth = np.array([p.nodule.diameter_mm for p in patches])
    images = torch.from_numpy(np.stack([p.image for p in patches])).unsqueeze(1)
    axial, largest, noted = largest_section_sizes(model, images)
    keep = (truth >= 4) & (truth <= 30)
    agreement = _size_agreement(axial[keep], largest[keep], truth[keep])
    noted_rate = _r(float(noted[keep].mean()), 3)
    # The diameter head against what it is trained to give, the exact axial mean diameter.
    head = {
        "mae_mm": _r(mae(axial[keep], axial_truth[keep]), 3),
        "mae_mm_ci95": [_r(v, 3) for v in mae_interval(axial[keep], axial_truth[keep])],
        "bias_mm": _r(float(np.mean(axial[keep] - axial_truth[keep])), 3),
    }
    if elongation is not None:
        head["by_long_axis"] = _head_bias_by_long_axis(patches, axial, axial_truth, keep)
    return {
        "seeds": [seed, seed + n - 1],
        "elongation": elongation,
        **agreement,
        "diameter_head_vs_axial_truth": head,
        "elongation_noted": noted_rate,
    }


def _head_bias_by_long_axis(
    patches: list[PhantomPatch], axial: np.ndarray, truth: np.ndarray, keep: np.ndarray
) -> dict[str, dict[str, Any]]:
    """The diameter head's bias on cigar-like phantoms by where the long axis points: within 17.5 degrees of the
    axial plane (the axial section shows the whole length) or within 45 degrees of z (it shows the width only)."""
    cos_z = np.array([abs(p.nodule.rotation[0, int(np.argmax(p.nodule.semi_axes_mm))]) for p in patches])
    out: dict[str, dict[str, Any]] = {}
    for name, mask in (("within_axial_plane", cos_z < 0.3), ("towards_z", cos_z > np.sqrt(0.5))):
        m = mask & keep
        error = axial[m] - truth[m]
        out[name] = {
            "nodules": int(m.sum()),
            "bias_mm": _r(float(error.mean()), 3) if m.any() else None,
            "relative_bias": _r(float((error / truth[m]).mean()), 3) if m.any() else None,
        }
    return out


def evaluate(model: ResMTNet, data_root: Path, n_phantoms: int, cache_dir: Path | None) -> dict[str, Any]:
    voi = load_voi(data_root)
    _, val_mask = split_by_patient(voi.patient_id, VAL_FRACTION, seed=0)
    source = LidcSource(voi.subset(np.nonzero(val_mask)[0]), PREPROCESSING, seed=12345)
    lidc, p = evaluate_lidc(model, source)
    return {
        "lidc_held_out_patients": lidc,
        "malignancy_calibration": calibration_report(
            p["malignancy"][:, 1], source.voi.malignant, source.voi.patient_id
        ),
        "spiculation_flag": spiculation_flag(p, source.voi),
        "diameter_orientation_lidc": lidc_orientation(p["measurements"][:, 0], source.voi),
        "lidc_split_headroom": split_headroom(voi),
        "filler_invariance": filler_invariance(model, source),
        "phantoms_held_out": evaluate_phantoms(model, n_phantoms, cache_dir),
        "largest_section_size": {
            "phantoms_held_out": evaluate_sections(model, n_phantoms // 2, PHANTOM_TEST_SEED, None),
            "phantoms_elongated": evaluate_sections(model, n_phantoms // 2, ELONGATED_SEED, ELONGATION),
            "lidc_held_out_patients": lidc_sections(model, source),
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data-root", type=Path, default=Path("../shared/datasets"))
    p.add_argument("--phantoms", type=int, default=1000)
    p.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--real-inputs-out", type=Path, default=None, help="save held-out LIDC inputs for parity")
    args = p.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    model, _ = load_checkpoint(args.checkpoint)
    result = evaluate(model, args.data_root, args.phantoms, args.cache_dir)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.real_inputs_out:
        voi = load_voi(args.data_root)
        _, val_mask = split_by_patient(voi.patient_id, VAL_FRACTION, seed=0)
        source = LidcSource(voi.subset(np.nonzero(val_mask)[0][:32]), PREPROCESSING, seed=3)
        np.save(args.real_inputs_out, source.batch("lung").image.numpy())


if __name__ == "__main__":
    main()
