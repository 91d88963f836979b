"""MODEL_CARD.md, written from the manifest so that every number in it is the one evaluate.py measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.clinical.sections import ELONGATED
from service.runtime.manifest import Manifest
from training.defaults import ELONGATED_EVERY, TRAIN_ELONGATION


def _ci(d: dict[str, Any], key: str) -> str:
    ci = d.get(f"{key}_ci95")
    return f" (95% CI {ci[0]}-{ci[1]})" if ci else ""


def _evaluation_section(ev: dict[str, Any]) -> list[str]:
    if not ev:
        return ["No evaluation was recorded for this export (a test or smoke model): do not use it."]
    lines = []
    lidc = ev.get("lidc_held_out_patients", {})
    if lidc:
        lines += [
            f"### LIDC-IDRI, {lidc['patients']} held-out patients ({lidc['nodules']} nodules, "
            f"{lidc['malignant']} malignant)",
            "",
            "| metric | value |",
            "| --- | --- |",
            f"| malignancy ROC AUC (label diagnosis_malignant) | {lidc['malignancy_auc']}"
            f"{_ci(lidc, 'malignancy_auc')} |",
            f"| ROC AUC of the model's own diameter estimate alone | {lidc['own_diameter_auc']}"
            f"{_ci(lidc, 'own_diameter_auc')} |",
            f"| diameter MAE (mm) | {lidc['diameter_mae_mm']}{_ci(lidc, 'diameter_mae_mm')} |",
            f"| volume median relative error (vs consensus mask) | {lidc['volume_median_rel_error']} |",
            f"| MAE of the six scores (mean) | {lidc['attribute_mae_mean']} |",
        ]
        lines += [f"| MAE of {k} | {v} |" for k, v in lidc["attribute_mae"].items()]
        lines.append("")
    head = ev.get("lidc_split_headroom", {})
    if head:
        other = head["true_diameter_auc_other_splits"]
        lines += [
            "How far these held-out patients let any ranker by size and reader scores go (the readers' own values,",
            "no model):",
            "",
            "| ranker on the held-out patients | ROC AUC |",
            "| --- | --- |",
            f"| true diameter | {head['true_diameter_auc']}{_ci(head, 'true_diameter_auc')} |",
            f"| true diameter and the six true reader scores (logistic, fitted on the training patients) | "
            f"{head['true_diameter_and_reader_scores_auc']} |",
            f"| true diameter, all LIDC patients of the data set | {head['true_diameter_auc_all_patients']} |",
            f"| true diameter on {other['splits']} other random patient splits of the same size | median "
            f"{other['median']} (min {other['min']}, max {other['max']}); harder than this split: "
            f"{other['splits_harder_than_this']} |",
            "",
        ]
    lines += _calibration_section(ev.get("malignancy_calibration", {}), ev.get("spiculation_flag", {}))
    inv = ev.get("filler_invariance", {})
    if inv:
        a, b = inv["filler_vs_lung"], inv["lung_vs_lung"]
        lines += [
            "### Filler invariance (same held-out nodules, different content outside the original VOI)",
            "",
            "| comparison | mean abs change of P(malignant) | p95 | mean abs change of diameter (mm) | p95 |",
            "| --- | --- | --- | --- | --- |",
            f"| stored filler vs lung-like fill | {a['malignancy_abs_diff_mean']} | {a['malignancy_abs_diff_p95']} "
            f"| {a['diameter_abs_diff_mean_mm']} | {a['diameter_abs_diff_p95_mm']} |",
            f"| two different lung-like fills | {b['malignancy_abs_diff_mean']} | {b['malignancy_abs_diff_p95']} "
            f"| {b['diameter_abs_diff_mean_mm']} | {b['diameter_abs_diff_p95_mm']} |",
            "",
        ]
    ph = ev.get("phantoms_held_out", {})
    if ph:
        lines += [
            f"### Synthetic phantoms, {ph['phantoms']} held out (seeds {ph['seeds'][0]}-{ph['seeds'][1]})",
            "",
            "| metric | value |",
            "| --- | --- |",
            f"| diameter MAE, nodules 4-30 mm (n={ph['nodules_4_30']}) | {ph['diameter_mae_mm_4_30']} mm"
            f"{_ci(ph, 'diameter_mae_mm_4_30')} |",
            f"| volume median relative error | {ph['volume_median_rel_error']} |",
            f"| type accuracy (solid / part-solid / ground glass) | {ph['type_accuracy']}{_ci(ph, 'type_accuracy')} |",
            f"| solid-component diameter MAE, part-solid (n={ph['part_solid_nodules']}) | "
            f"{ph['solid_diameter_mae_mm_part_solid']} mm |",
            "",
        ]
    return (
        lines
        + _sections_section(ev.get("largest_section_size", {}))
        + _orientation_section(ev.get("diameter_orientation_lidc"))
    )


def _sections_section(sec: dict[str, Any]) -> list[str]:
    """The size Lung-RADS reads (largest section) against the axial diameter alone."""
    if not sec:
        return []
    lines = [
        "### Size in the largest section (what Lung-RADS reads)",
        "",
        "Lung-RADS v2022 measures a nodule in the plane that reflects its true size. The service scales the model's",
        "axial diameter by how much larger the nodule's largest section (axial, coronal or sagittal) is than its",
        "axial one, both read from the predicted occupancy map. Against the exact largest-section mean diameter:",
        "",
        "| phantoms | size used | MAE (mm) | bias (mm) | size category right | too low |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, title in (("phantoms_held_out", "held out"), ("phantoms_elongated", "elongated")):
        ph = sec.get(key)
        if not ph:
            continue
        label = f"{title} (n={ph['nodules_4_30']}" + (
            f", one axis {ph['elongation'][0]:g}-{ph['elongation'][1]:g} x the others)" if ph["elongation"] else ")"
        )
        for size, name in (("axial_diameter", "axial diameter alone"), ("largest_section", "largest section")):
            r = ph[size]
            lines.append(
                f"| {label} | {name} | {r['mae_mm']}{_ci(r, 'mae_mm')} | {r['bias_mm']} | "
                f"{r['size_category_agreement']} | {r['size_category_too_low']} |"
            )
    head_rows = {
        name: sec[key]["diameter_head_vs_axial_truth"]
        for key, name in (("phantoms_held_out", "held-out"), ("phantoms_elongated", "elongated"))
        if "diameter_head_vs_axial_truth" in sec.get(key, {})
    }
    heads = [
        f"{h['mae_mm']} mm{_ci(h, 'mae_mm')}, bias {h['bias_mm']} mm, on the {name} phantoms"
        for name, h in head_rows.items()
    ]
    if heads:
        lines += [
            "",
            "The diameter head against what it is trained to give, the exact axial mean diameter: MAE "
            + "; ".join(heads)
            + ".",
        ]
    by_axis = sec.get("phantoms_elongated", {}).get("diameter_head_vs_axial_truth", {}).get("by_long_axis")
    if by_axis and all(b["bias_mm"] is not None for b in by_axis.values()):
        flat, up = by_axis["within_axial_plane"], by_axis["towards_z"]
        lines += [
            "",
            f"On the elongated phantoms it {_measures(flat['bias_mm'])} those lying within the axial plane "
            f"(bias {flat['bias_mm']} mm, {flat['relative_bias']:+.0%}, n={flat['nodules']}) and "
            f"{_measures(up['bias_mm'])} the axial cut of those pointing along z ({up['bias_mm']} mm, "
            f"{up['relative_bias']:+.0%}, n={up['nodules']}).",
        ]
    lidc = sec.get("lidc_held_out_patients")
    if lidc:
        lines += [
            "",
            f"On the held-out LIDC nodules (no section sizes are labelled) the largest section is not the axial "
            f"one for {lidc['largest_not_axial']} of {lidc['nodules']}; the size grows by a median factor of "
            f"{lidc['factor_median']} (90th percentile {lidc['factor_p90']}, at most {lidc['factor_max']}).",
        ]
    rates = [
        f"{sec[k]['elongation_noted']:.1%} of the {t} phantoms"
        for k, t in (("phantoms_held_out", "held-out"), ("phantoms_elongated", "elongated"))
        if k in sec
    ]
    if rates and lidc:
        lines += [
            "",
            f"A map more than {ELONGATED:g} times longer than wide adds a note to the answer with the map's own size, "
            f"to check by hand: {', '.join(rates)} and {lidc['elongation_noted']} of the {lidc['nodules']} LIDC "
            "nodules get it.",
        ]
    return lines + [""]


def _orientation_section(orient: dict[str, Any] | None) -> list[str]:
    """Whether the diameter follows a real nodule's orientation, judged by the held-out LIDC consensus masks."""
    if not orient:
        return []
    groups = orient["by_mask_shape"]
    against = ", ".join(
        f"{groups[k]['head_over_mask_axial_section']} for {title} (n={groups[k]['nodules']})"
        for k, title in (
            ("within_axial_plane", "nodules lying within the axial plane"),
            ("in_between", "those in between"),
            ("towards_z", "those pointing along z"),
        )
    )
    return [
        "### Orientation on real nodules",
        "",
        "Judged by each held-out LIDC nodule's consensus mask: the slope of log(size / the mask's volume-equivalent "
        "diameter) against log(the mask's axial section / that diameter) is 1 for an axial size that sees how a "
        "nodule lies and 0 for the diameter of a sphere of its volume. The readers' diameter label has "
        f"{orient['slope_reader_label']} and the diameter head, trained on it, {orient['slope_diameter_head']}. "
        f"Its diameter over the mask's axial-section mean diameter: {against}.",
        "",
    ]


def _measures(bias_mm: float) -> str:
    return "under-measures" if bias_mm < 0 else "over-measures"


def _calibration_section(cal: dict[str, Any], spic: dict[str, Any]) -> list[str]:
    if not cal:
        return []
    lo, hi = cal["ece_calibrated_cross_fitted_range"]
    lines = [
        f"### Calibration of P(malignant), {cal['fitted_on']}",
        "",
        f"Temperature scaling: the service reports sigmoid(logit(p) / {cal['temperature']}) as `malignancy`, and the",
        "raw probability as `malignancy_raw`. The temperature is fitted on all held-out patients; the 'after' figures",
        f"are cross-fitted ({cal['cross_fitting']}): each fold calibrated by a temperature fitted on the other folds",
        f"only, so no nodule is scored by a fit that saw its patient. ECE over {cal['bins']} equal-width bins.",
        "",
        "| metric | raw | calibrated (cross-fitted) |",
        "| --- | --- | --- |",
        f"| expected calibration error | {cal['ece_raw']} | {cal['ece_calibrated_cross_fitted']} "
        f"(range over fold assignments {lo}-{hi}) |",
        f"| log loss | {cal['log_loss_raw']} | {cal['log_loss_calibrated_cross_fitted']} |",
        f"| Brier score | {cal['brier_raw']} | {cal['brier_calibrated_cross_fitted']} |",
        "",
        f"Calibrated in-sample (fitted and scored on the same patients, optimistic): ECE "
        f"{cal['ece_calibrated_in_sample']}. A perfectly calibrated model with the same predictions would show an ECE "
        f"of {cal['ece_perfectly_calibrated_expected']} on average on this many nodules (sampling noise alone).",
        "",
        "![Reliability of P(malignant), raw and calibrated](reliability.png)",
        "",
    ]
    if spic:
        lines += [
            f"Spiculation flag (Brock's spiculation and the Lung-RADS 4X suggestion): the model's spiculation score "
            f">= {spic['threshold']} on {spic['flagged']} held-out nodules, {spic['flagged_reader_score_3_or_more']} "
            f"of them rated 3 or more by the readers, who rated {spic['reader_score_3_or_more']} nodules so; the "
            f"model's highest score is {spic['model_score_max']}.",
            "",
        ]
    return lines


def render_model_card(m: Manifest) -> str:
    pre = m.preprocessing
    perf = m.performance
    cfg = m.training.get("config", {})
    lines = [
        f"# Model card: {m.name} {m.version}",
        "",
        f"sha256 `{m.sha256}` · ONNX opset {m.opset} · created {m.created}",
        "",
        "## Intended use",
        "Research and clinical decision support for pulmonary nodules already found by a reader: malignancy and",
        "type probabilities, size measurements and radiologist-style scores for one nodule at a time.",
        "**Not a diagnosis and not a medical device.** Every output must be reviewed by a qualified clinician.",
        "It does not detect nodules, does not use prior scans, growth or clinical history.",
        "",
        "## Model",
        f"Res-MTNet: residual 3-D trunk (widths {cfg.get('widths')}, blocks {cfg.get('blocks')}), "
        f"{m.training.get('parameters', '?')} parameters, {perf.get('flops_per_patch', 0) / 1e6:.0f} MFLOPs per patch.",
        f"Input: {pre.patch_size}^3 voxels at {pre.spacing_mm} mm ({pre.field_of_view_mm:g} mm field of view), "
        f"HU clipped to {list(pre.hu_window)} and scaled to [0, 1].",
        "Outputs: " + "; ".join(f"`{o.name}` ({', '.join(o.labels or [])})" for o in m.outputs) + ".",
        "Volumes are the sum of a predicted occupancy map; diameters scale its equivalent diameter.",
        f"CPU latency (onnxruntime, {perf.get('threads')} threads): {perf.get('ms_per_patch_batch1')} ms per patch "
        f"at batch 1, {perf.get('ms_per_patch_batch16')} ms per patch at batch 16.",
        f"Export parity torch vs onnxruntime (max abs difference of probabilities): "
        f"{m.export.get('parity_max_abs_diff_probabilities', float('nan')):.2e}.",
        "",
        "## Training data",
        "- Synthetic CT phantoms (training/data/phantoms.py): solid, part-solid and ground-glass nodules, 3-35 mm,",
        "  ellipsoidal, lobulated or spiculated, on lung background with vessels, rendered at anisotropic spacing",
        "  with partial volume, blur and noise. Exact ground truth; malignancy drawn from the Brock (PanCan) model.",
        f"  Axes differ by up to about 1.4 times, except one phantom in {ELONGATED_EVERY}: one axis "
        f"{TRAIN_ELONGATION[0]:g}-{TRAIN_ELONGATION[1]:g} times the other two.",
        "- LIDC-IDRI (Armato et al., Med. Phys. 38:915, 2011; TCIA, CC BY 3.0): 3-D nodule VOIs with consensus masks,",
        "  diameters, diagnosis_malignant (at least two readers above 3) and max-voted scores. 80% of patients",
        "  trained on; 20% held out by patient for every LIDC number below. Those held-out patients also served to",
        "  monitor training, choose between recipes, fit the calibration and set the spiculation flag's threshold,",
        "  so the LIDC figures are validation figures, optimistic for new patients. In training the filler outside",
        "  each VOI is replaced by synthetic lung in three of four examples and left as stored in one in four, so the",
        "  model is not taught to rely on it; the filler invariance below measures what effect is left.",
        f"- Task weights: {m.training.get('task_weights', {})}.",
        "",
        "## Evaluation (training/evaluate.py, on data not trained on)",
        "",
        "LIDC figures are scored with one random lung-like fill outside each VOI (seed 12345). Another fill moves them",
        "by as much as some differences reported here (1.2.0: AUC 0.885-0.907 over 20 fills, see the README, Model).",
        "",
        *_evaluation_section(m.evaluation),
        "## Known limits",
        "- LIDC labels are radiologists' ratings, not pathology: 'malignant' means likely malignant to readers.",
        "- Phantoms cannot teach real anatomy: pleura, fissures, airways, calcification patterns, motion, or",
        "  reconstruction kernels other than a Gaussian blur; nodule types on real CT are learnt from few examples.",
        "- The field of view is 40 mm: nodules over about 32 mm are truncated and under-measured.",
        f"- Elongated nodules: one training phantom in {ELONGATED_EVERY} has one axis {TRAIN_ELONGATION[0]:g}-"
        f"{TRAIN_ELONGATION[1]:g} times the others, yet the diameter",
        "  head reads part of a nodule's size from its extent in every direction: it under-measures one lying",
        "  within the axial plane and over-measures the axial cut of one along z (see the evaluation above).",
        "  Lung-RADS reads the size in the largest section, which can make up for a short axial cut, not for a",
        "  short in-plane size; tube-like nodules may be taken for vessels. Every answer's lung_rads.not_assessed",
        "  says so.",
        "- LIDC VOIs end at the nodule's own slices; real context beyond them was never seen in training.",
        "- Scores (1-5) follow LIDC readers' scales and carry their disagreement.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(manifest: Manifest, directory: Path) -> Path:
    path = directory / "MODEL_CARD.md"
    path.write_text(render_model_card(manifest))
    return path
