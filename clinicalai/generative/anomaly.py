"""The anomaly workflow: what a model of healthy anatomy cannot explain in a volume.

``anomaly(image, model)`` prepares the image for the model's grid, reconstructs it as the
model would have it look healthy, and returns the residual map (on the input grid, exactly),
the reconstruction, and one volume score. Scoring against a lesion mask uses the same metrics
as the attribution maps (:func:`clinicalai.attribution.metrics.score_map`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..attribution.metrics import score_map
from ..errors import InputError, ModelError
from ..models import BUNDLED_MODELS_DIR, LoadedModel, bundled_model, load_model, read_card
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..volume import Volume
from .data import GridSpec, decode_labels, to_model_grid
from .nets import KINDS, POLARITIES, SCORE_NAMES, ScoreParts, check_kind, default_top_fraction, map_score, score_batch, to_numpy

TASK = "anomaly-detection"
#: the bundled model used when the user names none
DEFAULT_MODEL = "brain-ae-anomaly"


@dataclass
class AnomalyResult:
    """What :func:`anomaly` returns.

    Attributes:
        map: per-voxel anomaly (``|x - reconstruction|`` in units of the normalised input, or
            ``1 - p(true class)`` for label volumes), float32, on the input grid; 0 outside the
            model's field of view.
        score: the volume's anomaly score (see ``score_name``); higher = more abnormal.
        reconstruction: the healthy reconstruction on the input grid, in input units (label
            values for label volumes).
        kind: ``generative_kind`` of the model (wgan-gp, ae, vae, f-anogan, cyclegan).
        score_name: what ``score`` is.
        details: other per-volume numbers (critic score, feature residual, ...).
        timings: seconds per step.
    """

    map: Volume
    score: float
    reconstruction: Volume
    kind: str
    model: str
    score_name: str
    details: Dict[str, float] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    lesion_scores: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able summary (no voxel arrays)."""
        return {
            "model": self.model, "kind": self.kind, "score": self.score, "score_name": self.score_name,
            "details": dict(self.details), "timings": dict(self.timings),
            "map": {"shape": list(self.map.shape), "spacing": list(self.map.spacing),
                    "max": float(np.max(self.map.array)), "mean": float(np.mean(self.map.array)),
                    "polarity": self.map.metadata.get("polarity", "both")},
            "lesion_scores": self.lesion_scores,
        }


#: overlap of neighbouring windows of a whole-field model (fraction of the window), unless its card says
SLIDING_OVERLAP = 0.5


def _window_count(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding-window inference visits (its scan interval), for progress."""
    n = 1
    for length, r in zip(shape, roi):
        step = max(int(r * (1 - overlap)), 1)
        n *= 1 if length <= r else int(np.ceil((length - r) / step)) + 1
    return n


def score_whole(module, kind: str, x: torch.Tensor, spec: GridSpec, kappa: float, top_fraction: float,
                overlap: float = SLIDING_OVERLAP, progress: Optional[Callable[[float], None]] = None,
                cancel: Optional[CancelToken] = None) -> ScoreParts:
    """Map, reconstruction and volume score of a whole-field volume ``x`` (``(1, 1, Z, Y, X)``, at
    least ``spec.size``) read through overlapping windows of ``spec.size`` (MONAI
    ``sliding_window_inference``, Gaussian weights: a window's edge, where a convolutional
    reconstruction is worst, counts least).

    The volume score is :func:`~.nets.score_batch`'s on the blended map, over as many top voxels
    as one window would give (a lesion has the same size whatever the field of view); the
    critic and the f-AnoGAN feature residual are per window, blended like the map and averaged.
    """
    from monai.inferers import sliding_window_inference

    total, done = _window_count(x.shape[2:], spec.shape_zyx, overlap), [0]
    per_window = ("critic",) + (("feature_residual",) if kind == "f-anogan" else ()) if kind in ("wgan-gp", "f-anogan") else ()

    def predictor(window: torch.Tensor) -> torch.Tensor:
        check_cancel(cancel)
        part = score_batch(module, kind, window, False, kappa=kappa, top_fraction=top_fraction)
        extra = [part.details[k].reshape(-1, 1, 1, 1, 1).expand(-1, 1, *window.shape[2:]) for k in per_window]
        done[0] += window.shape[0]
        if progress is not None:
            progress(min(done[0] / total, 1.0))
        return torch.cat([part.map[:, None], part.reconstruction, *extra], 1)

    out = sliding_window_inference(x, spec.shape_zyx, 4, predictor, overlap=overlap, mode="gaussian",
                                   padding_mode="constant", cval=0.0)
    out = out.as_tensor() if hasattr(out, "as_tensor") else out
    amap, recon = out[:, 0], out[:, 1:1 + x.shape[1]]
    details = {k: out[:, 1 + x.shape[1] + i].reshape(out.shape[0], -1).mean(1) for i, k in enumerate(per_window)}
    # scoring only the head, its interior away from the skull's edges, or a median-filtered map
    # (3 or 5 voxels) did not separate healthy from lesioned template phantoms better (docs/heldout.md)
    fraction = min(1.0, top_fraction * float(np.prod(spec.shape_zyx)) / float(np.prod(amap.shape[1:])))
    score, error = map_score(amap, kind, fraction, kappa, details.get("feature_residual"))
    if error is not None:
        details["reconstruction_error"] = error
    return ScoreParts(amap, score, recon, details)


def resolve_anomaly_model(model: Union[LoadedModel, str, Path, None], device: str = "auto") -> LoadedModel:
    """A loaded anomaly-detection model from a model, a path or ``None`` (the bundled default);
    :class:`ModelError` when it is not one (wrong task, ONNX, card / network mismatch)."""
    if model is None:
        model = bundled_model(DEFAULT_MODEL)
    if not isinstance(model, LoadedModel):
        model = load_model(model, device=device)
    card = model.card
    if card.task != TASK:
        raise ModelError(f"model {card.name} is a {card.task} model; anomaly maps need an {TASK} model "
                         "(see 'clinicalai models list')")
    if model.module is None:
        raise ModelError(f"model {card.name} is not a torch model; anomaly maps need the generative network "
                         "itself (reconstruction, critic), which an ONNX export does not keep")
    kind = card.extra_get("generative_kind")
    if kind not in KINDS:
        raise ModelError(f"the card of {card.name} needs generative_kind, one of {', '.join(KINDS)}")
    if card.input.layout.kind != "engine":
        # the generative networks here are trained on this engine's own crops (generative.data)
        raise ModelError(f"model {card.name} has a MONAI input layout; anomaly maps need a generative model "
                         "trained by 'clinicalai train generative' (card input.layout 'engine')")
    check_kind(model.module, kind)
    return model


def anomaly(
    image: Volume,
    model: Union[LoadedModel, str, Path, None] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    lesion: Optional[Volume] = None,
    mask: Optional[Volume] = None,
    threshold: Union[float, str, None] = None,
    polarity: Optional[str] = None,
) -> AnomalyResult:
    """Anomaly map and score of ``image`` under a generative model of healthy anatomy.

    Args:
        image: the volume (intensity image, or sulcal label volume for label models).
        model: a loaded ``anomaly-detection`` model, a path, or ``None`` for the bundled demo.
        progress, cancel: GUI / CLI progress and cancellation.
        lesion: optional manual lesion mask on the image grid: the map is scored against it
            (``result.lesion_scores``, :func:`clinicalai.attribution.metrics.score_map`).
        mask: optional region for that scoring (e.g. the brain mask).
        threshold: threshold for the Dice of the scoring (default: the card's
            ``map_threshold``, else the 95th percentile).
        polarity: which residual the map shows (:data:`POLARITIES`; default the card's
            ``map_polarity``, else ``both``): ``both`` = ``|x - reconstruction|``; ``brighter``
            = how much brighter than the healthy reconstruction (FLAIR hyperintensities),
            ``darker`` = how much darker (T1 hypointense lesions), 0 where the residual has the
            other sign. Intensity models only; the volume score is always the unsigned one's.

    Raises:
        InputError: not a 3D finite volume, constant, wrong label values, lesion off-grid.
        ModelError: not an anomaly model, ONNX, card / network mismatch.
    """

    t0 = time.perf_counter()
    loaded = resolve_anomaly_model(model)
    card = loaded.card
    kind = card.extra_get("generative_kind")
    spec = GridSpec.from_card(card)
    polarity = map_polarity(card, polarity, labels=spec.input_kind == "labels")
    if lesion is not None and (not isinstance(lesion, Volume) or not lesion.same_grid(image, atol=1e-4)):
        raise InputError("the lesion mask must be a volume on the image grid (same shape, spacing, origin, direction)")
    check_cancel(cancel)
    report(progress, 0.05, "preparing the volume")
    prepared = to_model_grid(image, spec)
    t1 = time.perf_counter()
    check_cancel(cancel)
    report(progress, 0.3, f"reconstructing ({kind})")
    labels = spec.input_kind == "labels"
    module = loaded.module
    module.eval()
    kappa = float(card.extra_get("kappa", 1.0))
    top_fraction = float(card.extra_get("top_fraction", default_top_fraction(spec.input_kind)))
    with torch.no_grad():
        x = torch.from_numpy(prepared.tensor[None]).to(loaded.device)
        if spec.whole:
            parts = score_whole(module, kind, x, spec, kappa, top_fraction,
                                float(card.extra_get("sliding_overlap", SLIDING_OVERLAP)),
                                lambda f: report(progress, 0.3 + 0.5 * f, f"reconstructing ({kind}), sliding windows"),
                                cancel)
        else:
            parts = score_batch(module, kind, x, labels, kappa=kappa, top_fraction=top_fraction)
    amap = to_numpy(parts.map[0])
    recon = to_numpy(parts.reconstruction[0])
    if polarity != "both":
        residual = (prepared.tensor - recon).sum(axis=0)  # channels (one for the brain models)
        amap = np.clip(residual if polarity == "brighter" else -residual, 0.0, None).astype(np.float32)
    t2 = time.perf_counter()
    check_cancel(cancel)
    report(progress, 0.8, "mapping back onto the input grid")
    map_vol = prepared.to_input_grid(amap, fill=0.0, modality="MAP", units="anomaly", metadata={})
    if labels:
        recon_labels = decode_labels(recon, spec.label_values)
        fill = float(spec.label_values[1]) if len(spec.label_values) > 1 else 0.0
        recon_vol = prepared.to_input_grid(recon_labels, nearest=True, fill=fill, modality="SEG", units="label")
    else:
        recon_vol = prepared.to_input_grid(recon[0] * prepared.scale, fill=0.0)
    map_vol.metadata = {"generative_kind": kind, "model": card.name, "score": float(parts.score[0]), "polarity": polarity}
    result = AnomalyResult(
        map=map_vol, score=float(parts.score[0]), reconstruction=recon_vol, kind=kind, model=card.name,
        score_name=SCORE_NAMES[kind], details={k: float(v[0]) for k, v in parts.details.items()},
    )
    if lesion is not None:
        thr = threshold if threshold is not None else card.extra_get("map_threshold", "percentile:95")
        result.lesion_scores = score_map(map_vol, lesion, mask=mask, threshold=thr)
    t3 = time.perf_counter()
    result.timings = {"prepare_s": t1 - t0, "network_s": t2 - t1, "resample_back_s": t3 - t2, "total_s": t3 - t0}
    report(progress, 1.0, "done")
    return result


def polarity_name(value: Any, what: str = "the map polarity") -> str:
    """``value`` if it is one of :data:`POLARITIES`, else one clear :class:`InputError` (a page
    or a saved scene may hold any text)."""
    if value not in POLARITIES:
        raise InputError(f"{what} must be one of {', '.join(POLARITIES)}, got {str(value)[:40]!r}")
    return value


def map_polarity(card, polarity: Optional[str], labels: bool = False) -> str:
    """The map polarity to use: ``polarity``, else the card's ``map_polarity``, else ``both``;
    one clear error for a name not in :data:`POLARITIES` (``InputError`` for the argument,
    ``ModelError`` for the card) or a signed map of a label model (its map is 1 - p(true class),
    which has no sign)."""
    if polarity is None:
        polarity = card.extra_get("map_polarity", "both")
        if polarity not in POLARITIES:
            raise ModelError(f"the card's map_polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    else:
        polarity = polarity_name(polarity)
    if labels and polarity != "both":
        raise InputError("a label model's map (1 - p(true class)) has no sign: its polarity can only be 'both'")
    return polarity


def list_anomaly_models(directory: Union[str, Path, None] = None) -> List[Dict[str, Any]]:
    """The anomaly-detection models in ``directory`` (default: the bundled ones), for the GUIs.

    Each item: ``name``, ``path`` (weights), ``card`` (path), ``kind``, ``score_name``,
    ``input_kind``, ``synthetic_demo``, ``intended_use``. Cards that do not validate are skipped.
    """
    folder = Path(directory) if directory is not None else BUNDLED_MODELS_DIR
    out = []
    for card_path in sorted(folder.glob("*.json")):
        try:
            card = read_card(card_path)
        except ModelError:
            continue
        if card.task != TASK:
            continue
        kind = card.extra_get("generative_kind")
        weights = card_path.parent / (card.weights or card_path.with_suffix(".pt").name)
        out.append({
            "name": card.name, "path": str(weights), "card": str(card_path), "kind": kind,
            "score_name": SCORE_NAMES.get(kind, ""), "input_kind": card.extra_get("input_kind", "intensity"),
            "synthetic_demo": card.synthetic_demo, "intended_use": card.intended_use,
        })
    return out
