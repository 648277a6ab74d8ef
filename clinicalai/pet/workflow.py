"""PetRecurrence prediction: one FDOPA PET -> P(recurrence) from a fold ensemble, Grad-CAM on the
PET grid, the attention check and the static parameters (SUVmax, TBRmax, TBRmean).

The GUI (``clinicalai.mrml``) and the command line (``clinicalai pet``) both call
:func:`predict_pet`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..attribution.layers import default_cam_layer
from ..attribution.methods import attribute_tensor
from ..errors import ModelError
from ..models import BUNDLED_MODELS_DIR, LoadedModel, load_model
from ..models.fit import input_warnings
from ..models.ood import FeatureCapture, beyond_threshold, card_reference, features_distance, reference_layers
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..volume import Volume
from .calibration import CAM_EVIDENCE_UNITS, UNCERTAIN_SPREAD, uncertainty
from .classes import CLASSES, POSITIVE_CLASS
from .preprocess import PetPreprocessed, preprocess_from_card
from .static import StaticParameters, static_parameters

#: below this share of Grad-CAM energy inside the brain, the result carries a warning
CAM_INSIDE_BRAIN_WARNING = 0.5
#: fold models disagreeing by more than this (max - min probability) get a warning (and the
#: result is uncertain: :mod:`clinicalai.pet.calibration` holds the thresholds)
SPREAD_WARNING = UNCERTAIN_SPREAD
#: brain volumes (mL) a brain PET's brain mask falls in; outside, the input is probably no brain
#: PET (a cube of noise gives ~6,000 mL, a binary mask ~0); adult brains are ~1,000-1,800 mL
PLAUSIBLE_BRAIN_ML = (700.0, 2500.0)


@dataclass
class PetResult:
    """What :func:`predict_pet` gives back.

    Attributes:
        probability: P(recurrence), the mean of the fold models' probabilities.
        label: ``"recurrence"`` (probability >= 0.5) or ``"treatment-related change"``.
        fold_probabilities: each fold model's P(recurrence), in the order of ``models``.
        spread: max - min of ``fold_probabilities``.
        cam: Grad-CAM in [0, 1] averaged over folds, on the input PET grid (``None`` without ``cam``).
        cam_inside_brain_fraction: share of Grad-CAM energy inside the brain mask (``None`` without cam).
        warnings: sentences for the user (demo models, disagreeing folds, attention outside the brain...).
        static: SUVmax / TBRmax / TBRmean and the lesion VOI used.
        suv: the PET in SUV body weight on the input grid.
        brain_mask: the brain mask on the input grid (given or computed).
        timings: seconds per step (``preprocess``, ``inference``, ``gradcam``, ``static``, ``total``).
        models: names of the fold models.
        uncertain: the folds disagree (spread > ``calibration.UNCERTAIN_SPREAD``), the
            probability lies within ``calibration.UNCERTAIN_MARGIN`` of 0.5, or the PET is unlike
            the folds' training PETs (their cards' ``ood`` references): read the label as
            "undecided", whatever side of 0.5 it falls.
        uncertain_reasons: the sentences saying why (empty when not uncertain).
        temperature: the calibration temperature applied to the fold logits (1.0: none in the cards).
    """

    probability: float
    label: str
    fold_probabilities: List[float]
    spread: float
    cam: Optional[Volume]
    cam_inside_brain_fraction: Optional[float]
    warnings: List[str]
    static: StaticParameters
    suv: Volume
    brain_mask: Volume
    timings: Dict[str, float] = field(default_factory=dict)
    models: List[str] = field(default_factory=list)
    brain_mask_source: str = "computed"
    suv_conversion: Dict[str, Any] = field(default_factory=dict)
    uncertain: bool = False
    uncertain_reasons: List[str] = field(default_factory=list)
    temperature: float = 1.0

    @property
    def lesion_mask(self) -> Optional[Volume]:
        return self.static.lesion_mask

    def cam_evidence(self) -> Optional[Volume]:
        """The Grad-CAM as the panels show it: ``cam`` x ``probability``, 0 outside
        ``brain_mask``; values in [0, 1] on the PET grid; ``None`` without a Grad-CAM.

        Each fold's Grad-CAM is scaled to its own peak, so a case the ensemble calls negative
        still had a full-scale map, and a display threshold relative to the peak painted the
        striatum, scalp and background of every negative case (``scripts/pet_cam_display.py``:
        0.2 x peak painted about 900 mL of brain on the held-out non-recurrence phantoms).
        Weighted by P(recurrence) the map has one scale across cases: dark where the ensemble
        sees no recurrence, the Grad-CAM itself where it is sure. Attention outside the brain
        is not hidden from the report: ``cam_inside_brain_fraction`` and its warning keep it.
        """
        if self.cam is None:
            return None
        inside = np.asarray(self.brain_mask.array) > 0
        weighted = np.where(inside, np.asarray(self.cam.array, dtype=np.float32) * np.float32(self.probability), np.float32(0))
        return self.cam.with_array(weighted.astype(np.float32), units=CAM_EVIDENCE_UNITS,
                                   metadata=dict(self.cam.metadata, method="gradcam x P(recurrence), brain only"))

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able summary (no volumes)."""
        return {
            "probability_recurrence": round(self.probability, 4),
            "label": self.label,
            "fold_probabilities": [round(p, 4) for p in self.fold_probabilities],
            "spread": round(self.spread, 4),
            "uncertain": self.uncertain,
            "uncertain_reasons": list(self.uncertain_reasons),
            "temperature": self.temperature,
            "cam_inside_brain_fraction": None if self.cam_inside_brain_fraction is None else round(self.cam_inside_brain_fraction, 4),
            "static": self.static.to_dict(),
            "warnings": list(self.warnings),
            "models": list(self.models),
            "brain_mask": self.brain_mask_source,
            "suv_conversion": self.suv_conversion,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def bundled_pet_models() -> List[Path]:
    """The bundled demo fold models ``Resources/Models/pet-*-fold*.pt``."""
    found = sorted(BUNDLED_MODELS_DIR.glob("pet-*-fold*.pt"))
    if not found:
        raise ModelError(
            f"no bundled PET models in {BUNDLED_MODELS_DIR}; train them with "
            "'python -m clinicalai.pet.train_demo' or give --model"
        )
    return found


def load_pet_models(paths: Optional[Sequence["str | Path"]] = None, device: str = "auto") -> List[LoadedModel]:
    """Load fold models (default: the bundled ones) and check they are PET classifiers."""
    models = [load_model(p, device=device) for p in (paths or bundled_pet_models())]
    check_pet_models(models)
    return models


def check_pet_models(models: Sequence[LoadedModel]) -> None:
    """Clear errors for models that cannot classify a PET volume."""
    if not models:
        raise ModelError("no PET model given")
    for m in models:
        c = m.card
        if c.task != "classification":
            raise ModelError(f"model {c.name} is a {c.task} model; PetRecurrence needs a classification model")
        if c.spatial_dims != 3 or c.input.channels != 1:
            raise ModelError(f"model {c.name} expects {c.spatial_dims}D input with {c.input.channels} channels; "
                             "PetRecurrence needs a 3D single-channel model")
        if len(c.classes) != 2:
            raise ModelError(f"model {c.name} has {len(c.classes)} classes; PetRecurrence needs 2 "
                             f"({', '.join(CLASSES)})")
        if c.input.layout.kind != "engine":
            # the study's pipeline (SUV, brain-centred crop, (X, Y, Z) after LPS) is not MONAI's;
            # a MONAI-layout classifier runs in AttributionViewer / 'clinicalai explain' instead
            raise ModelError(f"model {c.name} has a MONAI input layout; PetRecurrence runs models trained on its "
                             "own preprocessing (card input.layout 'engine', arrays (X, Y, Z) after reorientation "
                             "to LPS): use 'clinicalai explain' for this classifier")


def _positive_index(card) -> int:
    names = [n.lower() for n in card.classes]
    return names.index(POSITIVE_CLASS) if POSITIVE_CLASS in names else 1


def card_temperature(card) -> float:
    """The calibration temperature of a fold card (``calibration.temperature``; 1.0 without one)."""
    cal = card.extra_get("calibration", None) or {}
    t = float(cal.get("temperature", 1.0)) if isinstance(cal, Mapping) else 1.0
    if not t > 0:
        raise ModelError(f"model {card.name}: calibration temperature must be > 0, got {t}")
    return t


def _probability(logits: np.ndarray, card) -> float:
    # temperature scaling divides the logits; softmax and sigmoid keep their ranking
    z = np.asarray(logits, dtype=np.float64).reshape(-1) / card_temperature(card)
    if z.size == 1:
        return float(1.0 / (1.0 + np.exp(-z[0])))
    e = np.exp(z - z.max())
    return float(e[_positive_index(card)] / e.sum())


def gradcam_tensor(module, x, layer: str, class_idx: int = 0):
    """Grad-CAM of ``module`` for input ``x`` ``(1, 1, X, Y, Z)`` at ``layer``, trilinearly
    upsampled to the input size and scaled to [0, 1]; ``(X, Y, Z)`` numpy.

    The one place PetRecurrence computes Grad-CAM, through
    :func:`clinicalai.attribution.methods.attribute_tensor` (the AttributionViewer's Grad-CAM).
    """
    import torch

    t = torch.as_tensor(x, dtype=torch.float32)
    names = dict(module.named_modules())
    if layer not in names:
        raise ModelError(f"Grad-CAM layer {layer!r} is not in the model (card cam_layer); "
                         f"e.g. {default_cam_layer(module, t)!r}")
    cam = attribute_tensor(module, t, "gradcam", class_idx, layer=layer)
    cam = cam.detach().cpu().numpy() if hasattr(cam, "detach") else np.asarray(cam)
    cam = np.asarray(cam, dtype=np.float32).reshape(t.shape[2:])
    cam = np.clip(cam, 0, None)
    return cam / cam.max() if cam.max() > 0 else cam


def predict_pet(
    pet: Volume,
    models: Sequence[LoadedModel],
    units: Optional[str] = None,
    brain_mask: Optional[Volume] = None,
    lesion: Optional[Volume] = None,
    cam: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    tags: Optional[Mapping[str, Any]] = None,
    bqml_fallback: bool = False,
) -> PetResult:
    """Classify one FDOPA PET as recurrence vs treatment-related change.

    Args:
        pet: the PET volume (DICOM Bq/mL with tags, or NIfTI with ``units``); any grid.
        models: fold models (:func:`load_pet_models`); their mean probability is the answer.
        units: ``suv`` / ``bqml`` for images without units (NIfTI).
        brain_mask: brain mask on any grid; ``None``: computed from the PET.
        lesion: lesion VOI for the static parameters; ``None``: 1.6 x background threshold.
        cam: compute Grad-CAM (card ``cam_layer`` or the last conv block), averaged over folds.
        tags: PET tags for a Bq/mL NIfTI (:func:`clinicalai.pet.suv.pet_tags_from_options`).
        bqml_fallback: for a Bq/mL PET whose weight, dose or times are unknown, report the
            uptake figures in Bq/mL (labelled so) instead of refusing; P(recurrence) and TBR do
            not depend on the scale (min-max input, ratios). The GUIs use it; the CLI does not.

    Raises:
        InputError: no units, 2D image, NaN, missing SUV tags, empty masks.
        ModelError: a model that is not a 3D PET classifier.
    """
    t_all = time.perf_counter()
    check_pet_models(models)
    timings: Dict[str, float] = {}
    report(progress, 0.0, "preprocessing")
    t = time.perf_counter()
    per_model = _preprocess_per_card(pet, models, units, brain_mask, tags, cancel, bqml_fallback)
    first = per_model[0]
    timings["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    probs, distances = _fold_probabilities(models, per_model, progress, cancel)
    timings["inference"] = time.perf_counter() - t
    probability = float(np.mean(probs))
    unlike = unlike_training_warning(models, distances)
    classes = models[0].card.classes
    pos = _positive_index(models[0].card)
    label = classes[pos] if probability >= 0.5 else classes[1 - pos]

    cam_volume, inside = None, None
    warnings: List[str] = []
    if cam:
        t = time.perf_counter()
        cam_arr = _ensemble_cam(models, per_model, pos, progress, cancel)
        cam_volume = pet.with_array(cam_arr, modality="MAP", units="Grad-CAM (0-1)", metadata={"method": "gradcam"})
        inside = _inside_fraction(cam_arr, first.brain_mask)
        if inside < CAM_INSIDE_BRAIN_WARNING:
            warnings.append(
                f"only {100 * inside:.0f}% of the Grad-CAM energy lies inside the brain: the decision may rest on "
                "uptake outside the brain (scalp, skull, background); do not trust this result"
            )
        timings["gradcam"] = time.perf_counter() - t

    report(progress, 0.9, "SUVmax / TBR")
    t = time.perf_counter()
    static = static_parameters(first.suv, first.brain_mask, lesion, quantity=first.conversion.quantity)
    timings["static"] = time.perf_counter() - t
    spread = float(max(probs) - min(probs))
    warnings.extend(_result_warnings(probs, spread, models, first))
    warnings.extend([unlike] if unlike else [])
    timings["total"] = time.perf_counter() - t_all
    report(progress, 1.0, "done")
    conv, unc = first.conversion, uncertainty(probability, probs, unlike_training=[unlike] if unlike else [])
    return PetResult(
        probability=probability, label=label, fold_probabilities=[float(p) for p in probs], spread=spread,
        cam=cam_volume, cam_inside_brain_fraction=inside, warnings=warnings, static=static, suv=first.suv,
        brain_mask=first.brain_mask, timings=timings, models=[m.card.name for m in models],
        brain_mask_source=first.brain_mask_source,
        suv_conversion={"from_units": conv.units, "factor": conv.factor, "quantity": conv.quantity, "label": conv.label,
                        **{k: v for k, v in conv.details.items() if isinstance(v, (int, float, str))}},
        uncertain=unc.uncertain, uncertain_reasons=unc.reasons,
        temperature=float(np.mean([card_temperature(m.card) for m in models])),
    )


# ---------------------------------------------------------------------------- steps of predict_pet
def _preprocess_per_card(pet: Volume, models: Sequence[LoadedModel], units: Optional[str],
                         brain_mask: Optional[Volume], tags: Optional[Mapping[str, Any]],
                         cancel: Optional[CancelToken], bqml_fallback: bool = False) -> List[PetPreprocessed]:
    """The network input of each model; models whose cards ask for the same grid and masking
    share one preprocessed object (the same instance)."""
    prepared: Dict[tuple, PetPreprocessed] = {}
    per_model = []
    for m in models:
        key = (tuple(m.card.input.spacing_mm or ()), tuple(m.card.input.size or ()), bool(m.card.extra_get("mask_outside", False)))
        if key not in prepared:
            check_cancel(cancel)
            prepared[key] = preprocess_from_card(pet, m.card, units=units, brain_mask=brain_mask, tags=tags,
                                                 bqml_fallback=bqml_fallback)
        per_model.append(prepared[key])
    return per_model


def _fold_probabilities(models: Sequence[LoadedModel], per_model: Sequence[PetPreprocessed],
                        progress: Optional[ProgressCallback], cancel: Optional[CancelToken]
                        ) -> Tuple[List[float], List[Optional[float]]]:
    """P(recurrence) of each fold model, and the PET's feature distance to the fold's training
    PETs (:mod:`clinicalai.models.ood`; ``None`` for a fold without a reference or network
    module: ONNX folds, older cards), taken from the same forward pass."""
    probs: List[float] = []
    distances: List[Optional[float]] = []
    for i, (m, pp) in enumerate(zip(models, per_model)):
        check_cancel(cancel)
        batch = pp.input[None]
        reference = card_reference(m.card) if m.module is not None else None
        if reference is None:
            probs.append(_probability(m.predict(batch), m.card))
            distances.append(None)
        else:
            with FeatureCapture(m.module, reference_layers(reference)) as capture:
                probs.append(_probability(m.predict(batch), m.card))
            distances.append(features_distance(capture.features(batch), reference))
        report(progress, 0.1 + 0.3 * (i + 1) / len(models), f"fold model {i + 1}/{len(models)}")
    return probs, distances


def unlike_training_warning(models: Sequence[LoadedModel], distances: Sequence[Optional[float]]) -> Optional[str]:
    """One sentence when the PET lies beyond the ``ood`` threshold of most fold models that have
    a reference (``distances``: :func:`_fold_probabilities`'s, ``None`` where a fold has none),
    else ``None`` (also when no fold was judged)."""
    judged, flagged = 0, []
    for m, distance in zip(models, distances):
        if distance is None:
            continue
        judged += 1
        found = beyond_threshold(distance, card_reference(m.card))
        if found is not None:
            flagged.append(found["distance"] / found["threshold"])
    if not judged or 2 * len(flagged) <= judged:
        return None
    return (f"this PET is unlike the PETs the fold models were trained on ({len(flagged)} of {judged} folds: feature distance "
            f"{min(flagged):.1f}-{max(flagged):.1f} x their thresholds): P(recurrence) may mean nothing for it")


def _ensemble_cam(models: Sequence[LoadedModel], per_model: Sequence[PetPreprocessed], pos: int,
                  progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> np.ndarray:
    """Grad-CAM ``(z, y, x)`` on the input PET grid, >= 0: averaged over the models sharing a
    network grid, put back onto the input grid, then averaged over grids weighted by model count."""
    import torch

    groups: List[PetPreprocessed] = []
    for pp in per_model:
        if not any(pp is g for g in groups):
            groups.append(pp)
    on_grid = []
    for shared in groups:
        group = [(m, pp) for m, pp in zip(models, per_model) if pp is shared]
        maps = []
        for m, pp in group:
            check_cancel(cancel)
            module = m.torch_module("Grad-CAM")
            x = torch.from_numpy(pp.input[None]).to(m.device)
            layer = m.card.cam_layer or default_cam_layer(module, x)
            class_idx = 0 if _n_outputs(m) == 1 else pos
            maps.append(gradcam_tensor(module, x, layer, class_idx))
            report(progress, 0.4 + 0.45 * (len(on_grid) + len(maps)) / len(models), "Grad-CAM")
        on_grid.append((len(group), shared.to_input_grid(np.mean(maps, axis=0)).array))
    total = sum(n for n, _ in on_grid)
    return np.clip(sum(n * a for n, a in on_grid) / total, 0, None).astype(np.float32)


def _inside_fraction(cam_arr: np.ndarray, brain_mask: Volume) -> float:
    """Share of the Grad-CAM energy inside the brain mask (0 for an empty map)."""
    energy = float(cam_arr.sum())
    return float(cam_arr[brain_mask.array > 0].sum() / energy) if energy > 0 else 0.0


def _result_warnings(probs: Sequence[float], spread: float, models: Sequence[LoadedModel],
                     first: PetPreprocessed) -> List[str]:
    """Sentences for the user about the folds, the models and the input."""
    warnings: List[str] = []
    if len(probs) > 1 and spread > SPREAD_WARNING:
        warnings.append(f"the fold models disagree (P(recurrence) from {min(probs):.2f} to {max(probs):.2f})")
    if any(m.card.synthetic_demo for m in models):
        warnings.append("demo models trained on synthetic phantoms: not for clinical use")
    if first.brain_mask_source == "computed":
        # worded for every front end: the CLI's --brain-mask and the panels' "brain mask" chooser
        warnings.append("brain mask computed from the PET (threshold), not a reviewed one: give a brain mask to use yours")
    brain_ml = float(first.brain_mask.array.sum()) * float(np.prod(first.brain_mask.spacing)) / 1000.0
    if not PLAUSIBLE_BRAIN_ML[0] <= brain_ml <= PLAUSIBLE_BRAIN_ML[1]:
        warnings.append(f"the brain found in this image is {brain_ml:,.0f} mL (a brain is about 1,000 to 1,800 mL): "
                        "it may not be a brain PET, and the models' answer means nothing for it")
    warnings.extend(input_warnings(first.suv, [models[0].card], "the PET"))
    return warnings


def _n_outputs(model: LoadedModel) -> int:
    kw = model.card.architecture.kwargs if model.card.architecture else {}
    return int(kw.get("num_classes", kw.get("out_channels", 1)))
