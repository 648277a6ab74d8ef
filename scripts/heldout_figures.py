"""Figures of the bundled demo models on held-out MNI-template phantoms (issue 19).

Runs the bundled demo models, as a user gets them, on phantoms of
:mod:`clinicalai.phantoms.mni` (a family no model was trained on) and prints Markdown tables:

- PET fold ensemble (``load_pet_models`` / ``predict_pet`` with Grad-CAM): AUC recurrence vs
  not, mean P(recurrence) on the non-recurrence cases and the share of them below 0.5, and the
  share of recurrence cases whose Grad-CAM maximum lies in the lesion or within 10 mm of it;
- brain-lesion classifier (``attribute`` with integrated-gradients and gradcam, scored by
  ``score_map`` against the lesion mask inside the brain): attribution AUROC, per contrast;
- generative anomaly models (``generative.anomaly``): map AUROC against the lesion inside the
  brain, and volume AUROC healthy vs lesioned from the anomaly score.

Synthetic phantoms on a real template; demo models; not clinical. Usage::

    python scripts/heldout_figures.py --n 8 --seed 0
    python scripts/heldout_figures.py --classifier-only --n 16 --seed 0 --classifier-model M.pt [--write-card]

``--classifier-only`` prints the classifier table of each ``--classifier-model`` (any file or
model name); ``--write-card`` stores the one model's figures in its card (``heldout``).
``--anomaly-only`` does the same for the generative table and each ``--anomaly-model``
(default the four bundled ones), e.g. candidates on seeds 100..::

    python scripts/heldout_figures.py --anomaly-only --n 8 --seed 100 --anomaly-model brain-ae-anomaly --anomaly-model A.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import ndimage

#: the anomaly models resample to their card's 3 mm grid themselves; 2 x 2 x 3 mm keeps the phantoms quick
ANOMALY_SPACING = (2.0, 2.0, 3.0)
ANOMALY_MODELS = ("brain-ae-anomaly", "brain-vae-anomaly", "brain-fanogan-anomaly", "brain-cyclegan-anomaly")
CAM_TOLERANCE_MM = 10.0


def _auc(labels: Sequence[int], scores: Sequence[float]) -> Optional[float]:
    """ROC AUC, ``None`` when only one class is present."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None


def _fmt(x: Optional[float], digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _mean_sd(values: Sequence[float]) -> str:
    v = [x for x in values if x is not None]
    return "n/a" if not v else f"{np.mean(v):.3f} +/- {np.std(v):.3f}"


def cam_max_distance_mm(cam: np.ndarray, lesion: np.ndarray, spacing_xyz: Sequence[float]) -> float:
    """Distance (mm) from the Grad-CAM maximum (first voxel in C order) to the nearest lesion
    voxel; 0 inside. Arrays ``(z, y, x)`` on one grid; an orthonormal direction keeps mm distances."""
    dist = ndimage.distance_transform_edt(lesion == 0, sampling=tuple(spacing_xyz)[::-1])
    return float(dist[np.unravel_index(int(np.argmax(cam)), cam.shape)])


def pet_figures(n: int, seed: int, calibration_n: int = 20) -> Dict[str, object]:
    """The PET ensemble on ``n`` MNI PET phantoms (alternately not recurrence / recurrence)."""
    from clinicalai.pet.workflow import load_pet_models, predict_pet
    from clinicalai.phantoms.mni import mni_pet_case

    models = load_pet_models(device="cpu")
    labels, probs, kinds, dists, folds, uncertain = [], [], [], [], [], []
    for i in range(n):
        case = mni_pet_case(seed + i, recurrence=bool(i % 2))
        res = predict_pet(case.image, models, brain_mask=case.brain_mask, cam=True)
        labels.append(case.label)
        probs.append(res.probability)
        folds.append(res.fold_probabilities)
        uncertain.append(res.uncertain)
        kinds.append(case.info["kind"])
        if case.label == 1:
            dists.append(cam_max_distance_mm(res.cam.array, case.lesion.array, case.image.spacing))
        print(f"  PET case {i}: {case.info['kind']:<11} P={res.probability:.3f}"
              + (f" cam-max {dists[-1]:.1f} mm from lesion" if case.label == 1 else ""), file=sys.stderr)
    neg = [p for p, y in zip(probs, labels) if y == 0]
    return {"n": n, "auc": _auc(labels, probs), "neg_mean": float(np.mean(neg)) if neg else None,
            "neg_below_half": float(np.mean([p < 0.5 for p in neg])) if neg else None,
            "n_neg": len(neg), "n_pos": len(dists),
            "cam_within": float(np.mean([d <= CAM_TOLERANCE_MM for d in dists])) if dists else None,
            "cam_inside": float(np.mean([d == 0 for d in dists])) if dists else None,
            "cam_median_mm": float(np.median(dists)) if dists else None,
            "per_kind": {k: float(np.mean([p for p, kk in zip(probs, kinds) if kk == k])) for k in sorted(set(kinds))},
            "uncertain": _uncertain_figures(labels, probs, uncertain),
            "calibration": pet_calibration(models, labels, folds, calibration_n)}


def _uncertain_figures(labels: Sequence[int], probs: Sequence[float], uncertain: Sequence[bool]) -> Dict[str, object]:
    """How many results the workflow marked uncertain, and the accuracy (threshold 0.5) of the
    marked and unmarked ones: the state is useful when the errors gather in it."""
    right = [(p >= 0.5) == (y == 1) for p, y in zip(probs, labels)]
    sure = [r for r, u in zip(right, uncertain) if not u]
    unsure = [r for r, u in zip(right, uncertain) if u]
    return {"n": int(sum(uncertain)), "accuracy_certain": float(np.mean(sure)) if sure else None,
            "accuracy_uncertain": float(np.mean(unsure)) if unsure else None,
            "errors_in_uncertain": int(len(unsure) - sum(unsure)), "errors": int(len(right) - sum(right))}


def pet_calibration(models, labels: Sequence[int], folds: Sequence[Sequence[float]], n_fit: int) -> Dict[str, object]:
    """Calibration of the ensemble on the held-out cases, as bundled and after temperature
    scaling. The temperature is fitted on ``n_fit`` phantoms of the TRAINING family
    (``clinicalai.phantoms.pet``, seeds 900000.., none of the demo's training seeds), never on
    the held-out family: every fold's logit on every case, one shared T."""
    from clinicalai.pet.calibration import (apply_temperature, brier_difference, calibration_report, fit_temperature,
                                            logit)
    from clinicalai.pet.workflow import predict_pet
    from clinicalai.phantoms.pet import pet_case

    fit_logits, fit_labels = [], []
    for i in range(n_fit):
        case = pet_case(900_000 + i, recurrence=bool(i % 2))
        res = predict_pet(case.image, models, brain_mask=case.brain_mask)
        fit_logits += list(logit(res.fold_probabilities))
        fit_labels += [case.label] * len(res.fold_probabilities)
    t = fit_temperature(fit_logits, fit_labels)
    scaled = [float(np.mean(apply_temperature(logit(f), t))) for f in folds]
    bundled = [float(np.mean(f)) for f in folds]
    out = {"n_fit": n_fit, "temperature": t, "bundled": calibration_report(labels, bundled),
           "scaled": calibration_report(labels, scaled),
           "brier_scaled_minus_bundled": brier_difference(labels, bundled, scaled),
           "scaled_neg_below_half": float(np.mean([p < 0.5 for p, y in zip(scaled, labels) if y == 0]))}
    print(f"  PET calibration: T={t:.3f} (fitted on {n_fit} training-family phantoms); held-out Brier "
          f"{out['bundled']['brier']} -> {out['scaled']['brier']}, ECE {out['bundled']['ece']} -> {out['scaled']['ece']}; "
          f"difference {out['brier_scaled_minus_bundled']}",
          file=sys.stderr)
    return out


def classifier_figures(n: int, seed: int, model_name: str = "brain-lesion-classifier",
                       baselines: Sequence[str] = ("zero",)) -> Dict[str, Dict[str, List[float]]]:
    """Attribution AUROC of a brain-lesion classifier (default the bundled one) on ``n``
    lesioned MNI MR phantoms of the held-out stream (FLAIR-like and T1-like alternately), per
    contrast and method, integrated gradients once per baseline name
    (``clinicalai.attribution.constrained.template_attribution_auroc``)."""
    from clinicalai.attribution.constrained import template_attribution_auroc
    from clinicalai.models import load_model

    model = load_model(model_name, device="cpu")
    return template_attribution_auroc(model, n, seed, baselines=baselines,
                                      log=lambda line: print(f"  classifier {line}", file=sys.stderr))


def classifier_markdown(name: str, clf: Dict[str, Dict[str, List[float]]]) -> List[str]:
    """The classifier table of one model: a column per method (per IG baseline), rows per contrast."""
    keys = list(next(iter(clf.values())))
    lines = [f"**Brain-lesion classifier** (`{name}`, attribution AUROC against the lesion "
             "mask inside the brain, mean +/- sd over cases)", "",
             "| contrast | cases | " + " | ".join(f"{k} AUROC" for k in keys) + " |",
             "| --- | --- |" + " --- |" * len(keys)]
    for contrast, per in clf.items():
        n = len(next(iter(per.values())))
        lines.append(f"| {contrast}-like | {n} | " + " | ".join(_mean_sd(per.get(k, [])) for k in keys) + " |")
    both = {k: [v for per in clf.values() for v in per.get(k, [])] for k in keys}
    lines.append(f"| both | {len(next(iter(both.values())))} | " + " | ".join(_mean_sd(both[k]) for k in keys) + " |")
    return lines


def write_card_figures(model_path: str, clf: Dict[str, Dict[str, List[float]]], n: int, seed: int,
                       command: str) -> None:
    """Store the held-out figures in the card beside ``model_path`` (its ``heldout`` entry);
    the weights, and so the card's sha256, are not touched."""
    from pathlib import Path

    from clinicalai.attribution.constrained import card_grid_mm, template_summary
    from clinicalai.models.card import store_heldout

    card_path = Path(model_path).with_suffix(".json")
    if not card_path.is_file():
        raise SystemExit(f"--write-card needs a model file with its card beside it; no {card_path}")
    card = json.loads(card_path.read_text())
    store_heldout(card_path, {**template_summary(clf, n, seed, card_grid_mm(card)), "command": command})
    print(f"  held-out figures written to {card_path}", file=sys.stderr)


def anomaly_figures(n: int, seed: int, models: Sequence[str] = ANOMALY_MODELS) -> Dict[str, Dict[str, object]]:
    """Map AUROC (lesioned cases) and volume AUROC (healthy vs lesioned) of anomaly models
    (default the bundled ones; any file or model name) on ``n`` lesioned and ``n`` healthy
    FLAIR-like MNI phantoms of the held-out stream, seeds ``seed..seed + 2n - 1``."""
    from clinicalai.attribution.metrics import score_map
    from clinicalai.generative.anomaly import anomaly
    from clinicalai.models import load_model
    from clinicalai.phantoms.mni import mni_brain_case

    cases = [mni_brain_case(seed + i, pathological=bool(i % 2), contrast="FLAIR", spacing=ANOMALY_SPACING)
             for i in range(2 * n)]
    out: Dict[str, Dict[str, object]] = {}
    for name in models:
        model = load_model(name, device="cpu")
        map_auc, fov_auc, labels, scores = [], [], [], []
        for case in cases:
            res = anomaly(case.image, model, lesion=case.lesion if case.pathological else None,
                          mask=case.brain_mask if case.pathological else None)
            labels.append(int(case.pathological))
            scores.append(res.score)
            if case.pathological:
                map_auc.append(res.lesion_scores["auroc"])
                # the map is 0 outside the model's field of view (its card's grid, cropped at the
                # image centre); scored again inside that field, where the model could see the lesion
                seen = (case.brain_mask.array > 0) & (res.map.array != 0)
                if (case.lesion.array[seen] > 0).any():
                    fov_auc.append(score_map(res.map, case.lesion, mask=seen)["auroc"])
        out[name] = {"map_auroc": map_auc, "fov_auroc": fov_auc, "volume_auroc": _auc(labels, scores)}
        print(f"  {name}: map AUROC {_mean_sd(map_auc)}, volume AUROC {_fmt(out[name]['volume_auroc'])}", file=sys.stderr)
    return out


def anomaly_markdown(anom: Dict[str, Dict[str, object]], title: str = "bundled") -> List[str]:
    """The anomaly table: a row per model."""
    lines = [f"**Generative anomaly models** ({title}; FLAIR-like cases; map AUROC against the lesion inside the brain)",
             "",
             "| model | map AUROC in the brain | map AUROC in the brain within the model's field of view (cases) "
             "| volume AUROC healthy vs lesioned |",
             "| --- | --- | --- | --- |"]
    for name, r in anom.items():
        lines.append(f"| {name} | {_mean_sd(r['map_auroc'])} | {_mean_sd(r['fov_auroc'])} ({len(r['fov_auroc'])}) "
                     f"| {_fmt(r['volume_auroc'])} |")
    return lines


def anomaly_summary(r: Dict[str, object], n: int, seed: int, command: str) -> Dict[str, object]:
    """One model's row of :func:`anomaly_figures` as a card's ``heldout`` entry."""
    from clinicalai.phantoms.mni import TEMPLATE_NAME

    def stats(values: Sequence[float]) -> Dict[str, object]:
        return {"mean": float(np.mean(values)) if values else None, "sd": float(np.std(values)) if values else None,
                "cases": len(values)}

    return {"family": f"mni held-out stream ({TEMPLATE_NAME})", "contrast": "FLAIR", "seed": seed,
            "healthy": n, "lesioned": n, "spacing_mm": list(ANOMALY_SPACING),
            "map_auroc_brain": stats(r["map_auroc"]), "map_auroc_field_of_view": stats(r["fov_auroc"]),
            "volume_auroc": r["volume_auroc"], "command": command}


def pet_calibration_markdown(pet: Dict[str, object]) -> List[str]:
    """The reliability tables (bundled, temperature-scaled) and the uncertain-state line."""
    cal, unc = pet["calibration"], pet["uncertain"]
    b, sc = cal["bundled"], cal["scaled"]
    d = cal["brier_scaled_minus_bundled"]
    lines = [f"**PET calibration** (held-out cases; temperature T = {cal['temperature']:.3f} fitted on "
             f"{cal['n_fit']} training-family phantoms)", "",
             "| P bin | cases | bundled: mean P | bundled: fraction recurrence | scaled: cases | scaled: mean P "
             "| scaled: fraction recurrence |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for rb, rs in zip(b["reliability"], sc["reliability"]):
        lines.append(f"| {rb['lo']:.1f}-{rb['hi']:.1f} | {rb['n']} | {_fmt(rb['mean_probability'])} "
                     f"| {_fmt(rb['fraction_positive'])} | {rs['n']} | {_fmt(rs['mean_probability'])} "
                     f"| {_fmt(rs['fraction_positive'])} |")
    lines += ["", f"Brier {b['brier']} bundled, {sc['brier']} scaled (difference {d['value']}, paired bootstrap 95 % "
              f"CI {d['ci95'][0]} to {d['ci95'][1]}); ECE {b['ece']} bundled, {sc['ece']} scaled. Uncertain results: "
              f"{unc['n']} of {pet['n']}, holding {unc['errors_in_uncertain']} of the {unc['errors']} errors "
              f"(accuracy {_fmt(unc['accuracy_uncertain'])} uncertain, {_fmt(unc['accuracy_certain'])} certain)."]
    return lines


def markdown(pet: Dict[str, object], clf: Dict[str, Dict[str, List[float]]], anom: Dict[str, Dict[str, object]]) -> str:
    """The three tables."""
    lines = [
        "**PET fold ensemble** (bundled `pet-cnn3d-fold0..2`)",
        "",
        "| cases | AUC recurrence vs not | mean P(recurrence), not recurrence | not recurrence with P < 0.5 "
        "| Grad-CAM max in lesion or <= 10 mm | in lesion | median distance (mm) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {pet['n_pos']} recurrence + {pet['n_neg']} not | {_fmt(pet['auc'])} | {_fmt(pet['neg_mean'])} "
        f"| {_fmt(pet['neg_below_half'], 2)} | {_fmt(pet['cam_within'], 2)} | {_fmt(pet['cam_inside'], 2)} "
        f"| {_fmt(pet['cam_median_mm'], 1)} |",
        "",
        "Mean P(recurrence) per kind: " + ", ".join(f"{k} {v:.3f}" for k, v in pet["per_kind"].items()) + ".",
        "",
        *pet_calibration_markdown(pet),
        "",
        *classifier_markdown("brain-lesion-classifier", clf),
    ]
    return "\n".join(lines + [""] + anomaly_markdown(anom))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="cases per table (anomaly: n healthy + n lesioned)")
    parser.add_argument("--seed", type=int, default=0, help="first seed of the MNI family's own seed space")
    parser.add_argument("--calibration-n", type=int, default=20,
                        help="training-family PET phantoms the calibration temperature is fitted on")
    parser.add_argument("--pet-only", action="store_true", help="only the PET table and its calibration")
    parser.add_argument("--classifier-only", action="store_true",
                        help="only the brain-lesion classifier table(s), for each --classifier-model")
    parser.add_argument("--classifier-model", action="append", metavar="M",
                        help="classifier for --classifier-only: file or model name (repeat; default the bundled one)")
    parser.add_argument("--baseline", action="append", metavar="NAME",
                        help="integrated-gradients baseline of the classifier table: zero, blur or mean "
                             "(repeat for a column each; default zero)")
    parser.add_argument("--anomaly-only", action="store_true",
                        help="only the generative anomaly table, for each --anomaly-model")
    parser.add_argument("--anomaly-model", action="append", metavar="M",
                        help="anomaly model for --anomaly-only: file or model name (repeat; default the bundled four)")
    parser.add_argument("--write-card", action="store_true",
                        help="with --classifier-only or --anomaly-only: store each model file's figures in its "
                             "card's 'heldout' (--classifier-only: exactly one model)")
    args = parser.parse_args(argv)
    from clinicalai.attribution.methods import baseline_name
    from clinicalai.errors import InputError

    try:  # a bad name stops here, not after the PET table
        args.baseline = [baseline_name(b) for b in args.baseline] if args.baseline else None
    except InputError as exc:
        raise SystemExit(str(exc)) from None
    import torch

    torch.set_num_threads(1)  # small networks on a shared CPU
    t0 = time.perf_counter()
    if args.classifier_only:
        return classifier_only(args, argv)
    if args.anomaly_only:
        return anomaly_only(args, argv)
    pet = pet_figures(args.n, args.seed, args.calibration_n)
    if args.pet_only:
        print(json.dumps(pet, indent=2))
        return 0
    clf = classifier_figures(args.n, args.seed, baselines=args.baseline or ("zero",))
    anom = anomaly_figures(args.n, args.seed)
    print(markdown(pet, clf, anom))
    print(f"\n({time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} CPU thread)", file=sys.stderr)
    return 0


def classifier_only(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> int:
    """``--classifier-only``: the classifier table of each ``--classifier-model``."""
    names = args.classifier_model or ["brain-lesion-classifier"]
    if args.write_card and len(names) != 1:
        raise SystemExit("--write-card takes exactly one --classifier-model")
    for name in names:
        clf = classifier_figures(args.n, args.seed, name, baselines=args.baseline or ("zero",))
        print("\n".join(classifier_markdown(name, clf)) + "\n")
        if args.write_card:
            command = "python scripts/heldout_figures.py " + " ".join(sys.argv[1:] if argv is None else argv)
            write_card_figures(name, clf, args.n, args.seed, command)
    return 0


def anomaly_only(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> int:
    """``--anomaly-only``: the anomaly table of each ``--anomaly-model`` (a missing file stops
    before any work); ``--write-card`` stores each row in the model's card (``heldout``)."""
    from pathlib import Path

    names = args.anomaly_model or list(ANOMALY_MODELS)
    for name in names:
        if name.endswith((".pt", ".onnx")) and not Path(name).is_file():
            raise SystemExit(f"no anomaly model file {name}")
        if args.write_card and not Path(name).with_suffix(".json").is_file():
            raise SystemExit(f"--write-card needs model files with their cards beside them; no {Path(name).with_suffix('.json')}")
    anom = anomaly_figures(args.n, args.seed, names)
    print("\n".join(anomaly_markdown(anom, f"held-out seeds {args.seed}-{args.seed + 2 * args.n - 1}")) + "\n")
    if args.write_card:
        command = "python scripts/heldout_figures.py " + " ".join(sys.argv[1:] if argv is None else argv)
        from clinicalai.models.card import store_heldout

        for name in names:
            card_path = Path(name).with_suffix(".json")
            store_heldout(card_path, anomaly_summary(anom[name], args.n, args.seed, command))
            print(f"  held-out figures written to {card_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
