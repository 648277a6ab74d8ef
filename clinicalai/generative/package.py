"""Train, validate and save a generative model package (weights + card), one call.

Used by ``clinicalai train generative`` and :mod:`clinicalai.generative.train_demo`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..attribution.metrics import HEADLINE_KEYS
from ..errors import InputError
from ..models import LoadedModel, check_model_output, save_model
from ..models.card import parse_card
from ..progress import CancelToken, ProgressCallback, report, scaled
from .anomaly import anomaly
from .data import (SULCAL_LABELS, GridSpec, brain_cases, brain_training_set, decode_labels, folder_training_set, mni_training_set,
                   prepare_cases, stack_padded, to_model_grid)
from .evaluate import synthetic_anomaly_auroc
from .nets import SCORE_NAMES, TOP_FRACTION, default_top_fraction
from .sulci import sulcal_case
from .train import TrainConfig, config_dict, train_generative, volume_scores

#: the model grid of brain-lesion phantom models: 3 mm, 32^3 (96 mm cube holds the brain)
BRAIN_SPEC = GridSpec((3.0, 3.0, 3.0), (32, 32, 32))


def sulcal_spec(size: int = 32) -> GridSpec:
    """The grid of sulcal-skeleton models: phantoms are 2 mm, cropped ``size``^3."""
    return GridSpec((2.0, 2.0, 2.0), (size, size, size), "labels", SULCAL_LABELS)


def sulcal_set(n: int, spec: GridSpec, seed: int = 0) -> np.ndarray:
    """``n`` healthy sulcal phantoms one-hot on ``spec``: ``(N, 3, s, s, s)``."""
    return np.stack([to_model_grid(sulcal_case(seed * 100003 + i, size=spec.size[0]), spec).tensor for i in range(n)])


#: training families of brain models: the brain-lesion phantoms alone, or mixed with healthy
#: MNI-template phantoms of that family's training stream (:func:`.data.mni_training_set`)
FAMILIES = ("phantom", "mix", "template")
#: contrasts of the MNI-template phantoms a brain model can train on (``family="template"`` for T1)
CONTRASTS = ("FLAIR", "T1")


@dataclass
class Source:
    """Where the training volumes come from: ``phantoms`` (brain-lesion or sulcal) or a folder.

    ``family="mix"`` (brain input, phantoms only) adds ``mni`` MNI-template phantoms to the
    ``phantoms`` brain-lesion phantoms (and as many lesioned ones of each for a CycleGAN);
    ``family="template"`` trains on ``phantoms`` MNI-template phantoms alone, of ``contrast``
    (``FLAIR`` or ``T1``: the brain-lesion phantoms have one contrast, so T1 is template-only).
    """

    phantoms: Optional[int] = None
    data: Optional[Path] = None
    pathological_data: Optional[Path] = None
    input: str = "brain"  # brain | sulci
    seed: int = 0
    family: str = "phantom"
    mni: int = 0
    contrast: str = "FLAIR"

    def check(self) -> None:
        """One clear error for options that do not go together (before any work)."""
        if self.family not in FAMILIES:
            raise InputError(f"training family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.contrast not in CONTRASTS:
            raise InputError(f"the template contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}")
        if self.contrast != "FLAIR" and self.family != "template":
            raise InputError("--contrast T1 is for --family template: the brain-lesion phantoms have one contrast")
        if self.family == "template" and (self.phantoms is None or self.input != "brain"):
            raise InputError("--family template trains on MNI-template phantoms alone: it needs --phantoms N "
                             "(the number of template phantoms) and --input brain")
        if self.family == "mix":
            if self.phantoms is None or self.input != "brain":
                raise InputError("--family mix mixes brain phantoms with MNI-template phantoms: "
                                 "it needs --phantoms N and --input brain")
            if self.mni < 2:
                raise InputError(f"--family mix needs at least 2 MNI-template phantoms (--mni), got {self.mni}")


def _mni_description(n: int, seed: int, lesioned: bool, contrast: str = "FLAIR") -> str:
    """What :func:`.data.mni_training_set` drew, for the card."""
    from ..phantoms.mni import TEMPLATE_NAME

    first = seed * 100003
    return (f"{n} {'lesioned' if lesioned else 'healthy'} MNI-template phantoms ({TEMPLATE_NAME}; training "
            f"stream, seeds {first}-{first + n - 1}; {contrast}-like; model-grid voxels; oblique for about half)")


def load_training_data(source: Source, spec: GridSpec, kind: str):
    """``(healthy, pathological or None, description)``; ``description`` is the card's
    ``training`` entries on the data: ``data`` (text), and for ``family="mix"`` also
    ``family``, ``mni`` and ``template_licence``."""
    source.check()
    if source.phantoms is not None:
        if source.phantoms < 2:
            raise InputError("--phantoms needs at least 2 volumes")
        if source.input == "sulci":
            if kind == "cyclegan":
                raise InputError("a CycleGAN needs pathological volumes; sulcal phantoms are all healthy")
            return (sulcal_set(source.phantoms, spec, source.seed), None,
                    {"data": f"{source.phantoms} sulcal-skeleton phantoms"})
        if source.family == "template":
            return _template_cases(source, spec, kind)
        healthy, _ = brain_training_set(source.phantoms, spec, seed=source.seed, pathological=False)
        path = None
        if kind == "cyclegan":
            path, _ = brain_training_set(source.phantoms, spec, seed=source.seed + 1, pathological=True)
        text = f"{source.phantoms} healthy brain-lesion phantoms" + (
            f" + {source.phantoms} pathological" if path is not None else "")
        if source.family == "phantom":
            return healthy, path, {"data": text}
        return _add_template_cases(source, spec, healthy, path, text)
    if source.data is None:
        raise InputError("give training data: --phantoms N or --data DIR")
    healthy = folder_training_set(source.data, spec)
    path = None
    if kind == "cyclegan":
        if source.pathological_data is None:
            raise InputError("a CycleGAN needs --pathological-data DIR (volumes with lesions) beside --data")
        path = folder_training_set(source.pathological_data, spec)
    return healthy, path, {"data": f"{len(healthy)} volumes from {source.data}"}


def _template_sets(source: Source, spec: GridSpec, n: int, lesioned_too: bool):
    """``n`` healthy template phantoms of ``source.contrast`` (seed ``source.seed``) and, when
    ``lesioned_too`` (a CycleGAN), ``n`` lesioned ones (seed + 1, else ``None``), with the
    card's words on what was drawn."""
    healthy, _ = mni_training_set(n, spec, seed=source.seed, pathological=False, contrast=source.contrast)
    text = _mni_description(n, source.seed, False, source.contrast)
    lesioned = None
    if lesioned_too:
        lesioned, _ = mni_training_set(n, spec, seed=source.seed + 1, pathological=True, contrast=source.contrast)
        text += " + " + _mni_description(n, source.seed + 1, True, source.contrast)
    return healthy, lesioned, text


def _template_cases(source: Source, spec: GridSpec, kind: str):
    """``family="template"``: ``source.phantoms`` healthy template phantoms of
    ``source.contrast`` (and as many lesioned ones, seed + 1, for a CycleGAN)."""
    from ..phantoms.mni import MNI_LICENSE

    healthy, path, text = _template_sets(source, spec, source.phantoms, kind == "cyclegan")
    return healthy, path, {"data": text, "family": "template", "mni": source.phantoms, "contrast": source.contrast,
                           "template_licence": MNI_LICENSE}


def _add_template_cases(source: Source, spec: GridSpec, healthy: np.ndarray, pathological: Optional[np.ndarray],
                        text: str):
    """``family="mix"``: ``source.mni`` healthy template phantoms after the brain-lesion ones
    (and as many lesioned ones, seed + 1, after the pathological set of a CycleGAN)."""
    from ..phantoms.mni import MNI_LICENSE

    mni_healthy, mni_path, mni_text = _template_sets(source, spec, source.mni, pathological is not None)
    # one array: whole-field volumes of both families padded to the same extent
    healthy = stack_padded(list(healthy) + list(mni_healthy))
    if pathological is not None:
        pathological = stack_padded(list(pathological) + list(mni_path))
    return healthy, pathological, {"data": text + "; " + mni_text, "family": "mix", "mni": source.mni,
                                   "template_licence": MNI_LICENSE}


def validate_brain(module, kind: str, spec: GridSpec, n: int = 16, seed: int = 9000,
                   kappa: float = 1.0, top_fraction: float = TOP_FRACTION, template_contrast: Optional[str] = None,
                   map_polarity: Optional[str] = None) -> Dict[str, Any]:
    """Held-out brain-lesion phantoms (or, with ``template_contrast``, MNI-template phantoms of
    that contrast from the training stream's seeds ``seed..``, which no trainer draws: its
    seeds are ``seed * 100003 + i``): AUROC of the volume score (healthy vs lesion) and the mean
    lesion scores of the maps (:func:`clinicalai.attribution.metrics.score_map`), each map as
    the card will show it (``map_polarity``)."""
    from sklearn.metrics import roc_auc_score

    if template_contrast is None:
        cases = brain_cases(n, seed=seed, pathological=None)
    else:
        from ..phantoms.mni import mni_brain_case

        cases = [mni_brain_case(seed + i, pathological=bool(i % 2), contrast=template_contrast,
                                spacing=spec.spacing_mm, stream="train") for i in range(n)]
    y = np.array([c.pathological for c in cases], int)
    card = parse_card({"name": "validation", "task": "anomaly-detection", "format": "state_dict",
                       "architecture": {"name": "monai.networks.nets.AutoEncoder"}, "input": spec.card_input(),
                       "generative_kind": kind, "kappa": kappa, "top_fraction": top_fraction,
                       **({"map_polarity": map_polarity} if map_polarity else {}), **spec.card_extra()})
    loaded = LoadedModel(card=card, backend="torch", path=Path("."), device="cpu", module=module)
    # a whole-field model is scored as the anomaly workflow reads it (sliding windows), case by case
    results = [anomaly(c.image, loaded, lesion=c.lesion if c.pathological else None,
                       mask=c.brain_mask if c.pathological else None) if spec.whole or c.pathological else None
               for c in cases]
    scores = ([r.score for r in results] if spec.whole
              else volume_scores(module, kind, prepare_cases(cases, spec), False, kappa, top_fraction=top_fraction))
    out: Dict[str, Any] = {"phantoms": n, "seed": seed, "volume_auroc": float(roc_auc_score(y, scores))}
    if template_contrast is not None:
        out["data"] = f"MNI-template phantoms, {template_contrast}-like, training stream seeds {seed}-{seed + n - 1}"
    # per-voxel: score the maps of the lesioned cases on their own (input) grid
    metrics: Dict[str, List[float]] = {}
    for c, r in zip(cases, results):
        if not c.pathological:
            continue
        for k in HEADLINE_KEYS:
            if r.lesion_scores.get(k) is not None:
                metrics.setdefault(k, []).append(float(r.lesion_scores[k]))
    out.update({f"map_{k}": float(np.mean(v)) for k, v in metrics.items()})
    out["map_threshold"] = "percentile:95"
    return out


def validate_sulci(module, kind: str, spec: GridSpec, n: int = 12, seed: int = 9000,
                   sizes=(200, 500, 800), kappa: float = 1.0, top_fraction: float = TOP_FRACTION) -> Dict[str, Any]:
    """Held-out sulcal phantoms: AUROC per size of removed structure.

    Sizes that are not smaller than the fewest sulcus voxels of a phantom (small crops) are
    skipped and listed under ``skipped_sizes``, as ``clinicalai evaluate generative`` does.
    """
    x = sulcal_set(n, spec, seed)
    fewest = int(min((decode_labels(v, spec.label_values) == 60).sum() for v in x))
    usable = [int(s) for s in sizes if s < fewest]
    rows = synthetic_anomaly_auroc(module, kind, spec, x, sizes=usable, seed=seed, kappa=kappa,
                                   top_fraction=top_fraction) if usable else []
    return {"phantoms": n, "seed": seed, "sulcus_voxels_min": fewest, "removed_structure_auroc": rows,
            "skipped_sizes": [int(s) for s in sizes if s >= fewest]}


def train_package(
    config: TrainConfig,
    source: Source,
    out: Path,
    spec: Optional[GridSpec] = None,
    name: Optional[str] = None,
    command: str = "",
    validate: int = 16,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    map_polarity: Optional[str] = None,
) -> Dict[str, Any]:
    """Train ``config.kind`` on ``source``, validate on held-out phantoms, save ``out`` (.pt + .json).

    ``map_polarity``: the card's default map (:func:`.anomaly.map_polarity`; none: unsigned).
    Returns the card as a dict. Nothing is written if training fails or is cancelled.
    """
    out = check_model_output(out)
    if map_polarity is not None:
        from .anomaly import polarity_name

        polarity_name(map_polarity)
        if source.input == "sulci":
            raise InputError("a sulcal (label) model's map has no sign: --map-polarity is for brain intensity models")
    spec = spec or (sulcal_spec() if source.input == "sulci" else BRAIN_SPEC)
    report(progress, 0.0, "preparing training volumes")
    healthy, pathological, described = load_training_data(source, spec, config.kind)
    t0 = time.perf_counter()
    result = train_generative(config, spec, healthy, pathological, progress=scaled(progress, 0.05, 0.9), cancel=cancel)
    validation: Dict[str, Any] = {}
    if validate and source.phantoms is not None:
        report(progress, 0.92, "validating on held-out phantoms")
        check = validate_sulci if spec.input_kind == "labels" else validate_brain
        template = {"template_contrast": source.contrast} if source.family == "template" else {}
        signed = {"map_polarity": map_polarity} if map_polarity else {}
        validation = check(result.module, config.kind, spec, n=validate, kappa=config.kappa,
                           top_fraction=default_top_fraction(spec.input_kind), **template, **signed)
    synthetic = source.phantoms is not None
    card = {
        "name": name or out.stem,
        "version": "1.0.0",
        "task": "anomaly-detection",
        "format": "state_dict",
        "architecture": {"name": result.architecture, "kwargs": result.kwargs},
        "spatial_dims": 3,
        "input": spec.card_input(),
        "intended_use": ("synthetic phantom demo; not for clinical use" if synthetic else
                         "research use: anomaly maps from a model of healthy anatomy; not for clinical use"),
        "synthetic_demo": synthetic,
        "training": {"command": command, **described, "config": config_dict(config),
                     "epochs_run": result.epochs_run,
                     "device": "cpu", "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - t0, 1),
                     "final_losses": result.history[-1] if result.history else {}},
        "validation": validation,
        "generative_kind": config.kind,
        "score_name": SCORE_NAMES[config.kind],
        "kappa": config.kappa,
        "top_fraction": default_top_fraction(spec.input_kind),
        "map_threshold": "percentile:95",
        **({"map_polarity": map_polarity} if map_polarity else {}),
        **spec.card_extra(),
    }
    save_model(result.module, card, out)
    report(progress, 1.0, f"saved {out.name}")
    return card
