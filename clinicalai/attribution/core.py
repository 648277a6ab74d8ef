"""``attribute(model, volume, method)``: an attribution map on the input grid, whatever the method.

The model card's preprocessing is applied (:mod:`.preprocess`), the method runs on the
network grid (:mod:`.methods`), channels are summed, the map is put back onto the input grid
(the spatial steps inverted) and optionally normalised. The result records everything needed
to reproduce it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError, ModelError
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..volume import Volume
from ..models import LoadedModel, load_model, parse_card
from ..models.fit import input_warnings
from .ood import feature_warning
from .methods import BLUR_SIGMA_MM, _as_logits, baseline_name, baseline_tensor, get_method
from .metrics import map_correlation
from .preprocess import Prepared, prepare_input

NORMALIZATIONS = ("none", "max-abs", "percentile")


@dataclass
class AttributionMap:
    """An attribution map and how it was made.

    Attributes:
        volume: the map on the input grid (float32, same shape/spacing/origin/direction).
        method: DESIGN.md method name.
        target: explained class index (in the card's ``classes``).
        target_name: its class name (``None`` without a card).
        signed: whether the map's sign means something (CAMs are non-negative).
        normalization: ``"none"``, ``"max-abs"`` (divided by max |map|, in [-1, 1]) or
            ``"percentile:P"`` (divided by the P-th percentile of |map|, clipped to [-1, 1]).
        options: the method options used (JSON-able; tensors summarised).
        timings: seconds per step (``preprocess``, ``attribution``, ``inverse``, ``total``).
        prediction: the model's class probabilities on this input.
        layer: the explained layer for CAM methods.
        scale: the divisor applied by the normalisation (1 for none).
        warnings: sentences for the user about the input (:func:`clinicalai.models.fit.input_warnings`).
    """

    volume: Volume
    method: str
    target: int
    target_name: Optional[str]
    signed: bool
    normalization: str
    options: Dict[str, Any] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    prediction: Dict[str, Any] = field(default_factory=dict)
    layer: Optional[str] = None
    scale: float = 1.0
    warnings: List[str] = field(default_factory=list)

    @property
    def array(self) -> np.ndarray:
        return self.volume.array

    def to_dict(self) -> Dict[str, Any]:
        """Everything but the voxels, JSON-able."""
        return {
            "method": self.method,
            "target": self.target,
            "target_name": self.target_name,
            "signed": self.signed,
            "normalization": self.normalization,
            "scale": self.scale,
            "layer": self.layer,
            "options": self.options,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "prediction": self.prediction,
            "warnings": list(self.warnings),
            "shape": list(self.volume.shape),
            "min": float(self.volume.array.min()),
            "max": float(self.volume.array.max()),
        }


def normalize_map(arr: np.ndarray, normalization: str = "max-abs"):
    """``(normalised array, divisor, canonical name)``."""
    name = (normalization or "none").strip().lower()
    a = np.asarray(arr, dtype=np.float32)
    if name == "none":
        return a, 1.0, "none"
    if name == "max-abs":
        s = float(np.abs(a).max())
        return (a / s if s > 0 else a), (s if s > 0 else 1.0), "max-abs"
    if name.startswith("percentile"):
        p = float(name.split(":", 1)[1]) if ":" in name else 99.0
        if not 0 < p <= 100:
            raise InputError(f"normalisation percentile must be in (0, 100], got {p}")
        s = float(np.percentile(np.abs(a), p))
        s = s if s > 0 else (float(np.abs(a).max()) or 1.0)
        return np.clip(a / s, -1.0, 1.0).astype(np.float32), s, f"percentile:{p:g}"
    raise InputError(f"unknown map normalisation {normalization!r}; choose none, max-abs or percentile[:P]")


# ---------------------------------------------------------------------------- model handling
def _model_parts(model, card):
    """``(torch module or None, forward callable for perturbations, card, device)``."""
    if isinstance(model, (str,)) or hasattr(model, "__fspath__"):
        model = load_model(model)
    if isinstance(card, dict):
        card = parse_card(card, "given card")
    if isinstance(model, LoadedModel):
        card = card or model.card
        if card.task != "classification":
            raise ModelError(f"attribution explains classifiers; {card.name} is a {card.task} model")
        if model.module is not None:
            return model.module, None, card, model.device
        return None, (lambda batch: model.predict(batch)), card, "cpu"
    import torch.nn as nn

    if isinstance(model, nn.Module):
        try:
            device = str(next(model.parameters()).device)
        except StopIteration:
            device = "cpu"
        return model, None, card, device
    raise ModelError(f"cannot explain a {type(model).__name__}: give a model file, a LoadedModel or a torch module")


def _class_names(card, k: int) -> List[str]:
    if card is not None and card.classes:
        return list(card.classes)
    return [f"class {i}" for i in range(max(k, 2) if k == 1 else k)]


def _probabilities(logits) -> np.ndarray:
    """``(N, n_classes)`` probabilities: softmax, or (1 - sigmoid, sigmoid) for one logit."""
    import torch

    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1).cpu().numpy()
    return torch.softmax(logits, dim=1).cpu().numpy()


def _resolve_class(target, names: List[str], probs: np.ndarray, slicewise: bool) -> int:
    n_classes = probs.shape[1]
    if target is None:
        if not slicewise:
            return int(probs[0].argmax())
        # a slice classifier on a volume: the volume shows class k > 0 if any slice does;
        # class 0 is the reference ("healthy") class
        per_slice = probs.argmax(1)
        found = [k for k in range(1, n_classes) if np.any(per_slice == k)]
        return int(max(found, key=lambda k: probs[:, k].max())) if found else 0
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if target not in names:
            raise InputError(f"unknown target class {target!r}; the model's classes are {', '.join(names)}")
        return names.index(target)
    k = int(target)
    if not 0 <= k < n_classes:
        raise InputError(f"target {k} is out of range; the model has {n_classes} classes ({', '.join(names)}): 0..{n_classes - 1}")
    return k


def _jsonable(options: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in options.items():
        if hasattr(v, "shape") and not np.isscalar(v):
            out[k] = f"array{tuple(v.shape)}"
        elif isinstance(v, (list, tuple)) and v and isinstance(v[0], Volume):
            out[k] = f"{len(v)} volumes"
        elif isinstance(v, Volume):
            out[k] = "volume"
        else:
            out[k] = v
    return out


def attribute(
    model,
    volume: Union[Volume, Sequence[Volume]],
    method: str,
    target: Union[None, int, str] = None,
    *,
    layer: Optional[str] = None,
    normalization: str = "max-abs",
    references: Optional[Sequence[Volume]] = None,
    card=None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    **options: Any,
) -> AttributionMap:
    """Explain ``model`` on ``volume`` with ``method``; the map comes back on the input grid.

    Args:
        model: a model file path, a ``LoadedModel`` (ONNX: occlusion only) or a torch module
            (then ``card`` gives the preprocessing; without one the array goes in as it is).
        volume: the image, or one Volume per input channel (same grid).
        method: ``gradient``, ``gradient-x-input``, ``integrated-gradients``,
            ``expected-gradients``, ``smoothgrad``, ``guided-backprop``, ``gradcam``,
            ``gradcam++`` or ``occlusion``.
        target: class index or name in the card's ``classes`` (default: the predicted class;
            for a 2D slice model, the class any slice shows, class 0 being the reference).
            A binary head with a single logit explains that logit for class 1 and its
            negation for class 0.
        layer: gradcam / gradcam++ layer name (default: the card's ``cam_layer``, else the
            last convolutional block).
        normalization: ``none``, ``max-abs`` or ``percentile[:P]`` (default P = 99).
        references: reference volumes (e.g. healthy) for ``expected-gradients`` (required), and
            for ``integrated-gradients`` with ``baseline="reference"`` (the first one);
            preprocessed like the input.
        options: method options (``n_steps``, ``baseline``, ``sigma_mm``, ``n_samples``,
            ``nt_samples``, ``noise_level``, ``patch``, ``stride``, ``internal_batch_size``,
            ``seed``). ``baseline`` of ``integrated-gradients``: ``zero``, ``blur`` (Gaussian of
            ``sigma_mm`` on the network grid), ``mean`` (:data:`.methods.BASELINES`), a number or
            ``reference``; without one, the card's ``attribution.baseline``, else ``zero``.
    """
    t0 = time.perf_counter()
    cls = get_method(method)
    module, fn, card, device = _model_parts(model, card)
    _check_method_fits(cls, module, layer)
    report(progress, 0.0, "preparing the input")
    prep: Prepared = prepare_input(volume, card, device=device if module is not None else "cpu")
    timings = {"preprocess": time.perf_counter() - t0}
    check_cancel(cancel)

    n_logits, probs, names = _predict(module, fn, prep.tensor, card)
    unlike_training = feature_warning(module, card, prep.tensor)
    cls_index = _resolve_class(target, names, probs, prep.slicewise)
    # output index and sign: a one-logit head explains -logit for class 0
    out_index, sign = (0, 1.0 if cls_index == 1 else -1.0) if n_logits == 1 else (cls_index, 1.0)
    opts, named = _method_options(cls, card, layer, references, prep, options)

    report(progress, 0.1, f"{cls.name}")
    t1 = time.perf_counter()
    impl = cls(module if module is not None else fn, sign=sign)
    net_map = _run_method(impl, prep, out_index, opts, progress, cancel)
    timings["attribution"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    first = volume if isinstance(volume, Volume) else list(volume)[0]
    out_vol, scale, norm_name = _map_on_input_grid(prep, net_map, first, normalization, cls.name, names[cls_index])
    timings["inverse"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    report(progress, 1.0, "done")
    return AttributionMap(
        volume=out_vol, method=cls.name, target=cls_index, target_name=names[cls_index],
        signed=cls.signed, normalization=norm_name, options=_jsonable({**_recorded_options(opts), **named}), timings=timings,
        prediction=_prediction(names, probs, prep.slicewise), layer=getattr(impl, "layer", None), scale=scale,
        warnings=input_warnings(first, [card] if card is not None else []) + ([unlike_training] if unlike_training else []),
    )


# ---------------------------------------------------------------------------- steps of attribute
def _check_method_fits(cls, module, layer: Optional[str]) -> None:
    """Refuse a gradient method on an ONNX model and a layer for a method without one."""
    if module is None and cls.needs_gradients:
        raise ModelError(
            f"{cls.name} needs gradients, which an ONNX model cannot give; use a .pt model "
            "(state dict or TorchScript), or a perturbation method such as occlusion"
        )
    if layer is not None and not cls.layer_based:
        raise InputError(f"{cls.name} does not use a layer (only gradcam and gradcam++ do)")


def _predict(module, fn, x, card):
    """``(number of logits, probabilities (N, n_classes), class names)`` of the network on ``x``."""
    import torch

    with torch.no_grad():
        logits = _as_logits(module(x) if module is not None else torch.from_numpy(np.asarray(fn(x.numpy()))))
    k = int(logits.shape[1])
    probs = _probabilities(logits)
    names = _class_names(card, k)
    if len(names) != probs.shape[1]:
        raise ModelError(f"the card lists {len(names)} classes but the model has {k} output(s)")
    return k, probs, names


def _method_options(cls, card, layer: Optional[str], references, prep: Prepared,
                    options: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The method's options and what the result records of them in words.

    The CAM layer (argument, else the card's); the reference volumes prepared like the input
    (baselines of expected / integrated gradients); a named IG baseline made on the whole
    network input (:func:`_named_baseline`).
    """
    import torch

    x = prep.tensor
    opts = dict(options)
    named: Dict[str, Any] = {}
    if cls.layer_based:
        opts["layer"] = layer or (card.cam_layer if card is not None else None)
    # occlusion takes a named baseline only when asked (the card's default is integrated gradients')
    if cls.name == "integrated-gradients" or (cls.name == "occlusion" and isinstance(opts.get("baseline"), str)):
        named = _named_baseline(card, prep, opts)
    if "sigma_mm" in opts:  # not taken by a blur baseline: it would change nothing, silently
        raise InputError("sigma_mm is the width of the blur baseline: it needs baseline 'blur' "
                         "(integrated-gradients, or occlusion)")
    if references is not None:
        ref_tensors = [prepare_input(r, card, device=str(x.device)).tensor for r in (
            [references] if isinstance(references, Volume) else list(references))]
        if any(tuple(r.shape[1:]) != tuple(x.shape[1:]) for r in ref_tensors):
            raise InputError("the reference volumes do not give the same network input size as the image; "
                             "resample them onto the image grid or use a model card with input.size")
        if cls.name == "expected-gradients":
            # a slice model draws baselines from all reference slices
            opts["references"] = torch.cat(ref_tensors, dim=0)
        elif cls.name == "integrated-gradients" and opts.get("baseline") == "reference":
            if ref_tensors[0].shape[0] != x.shape[0]:
                raise InputError(
                    f"the reference volume gives {ref_tensors[0].shape[0]} slices and the image {x.shape[0]}; "
                    "the slice model's reference baseline is taken slice by slice: resample it onto the image grid")
            opts["baseline"] = ref_tensors[0]
    elif cls.name == "integrated-gradients" and opts.get("baseline") == "reference":
        raise InputError("baseline 'reference' needs a reference volume (references=...)")
    if cls.name == "expected-gradients" and "references" not in opts:
        raise InputError("expected-gradients needs reference volumes (healthy images) to draw baselines from")
    return opts, named


def card_baseline(card) -> Dict[str, Any]:
    """The card's IG baseline defaults, ``{"baseline": name, "sigma_mm": mm}`` (either may be
    missing): its ``attribution: {"baseline": ..., "blur_sigma_mm": ...}`` entry, checked."""
    entry = card.extra_get("attribution") if card is not None and hasattr(card, "extra_get") else None
    if not entry:
        return {}
    if not isinstance(entry, dict):
        raise ModelError(f"the model card's 'attribution' must be an object, got {type(entry).__name__}")
    out: Dict[str, Any] = {}
    if entry.get("baseline") is not None:
        out["baseline"] = baseline_name(entry["baseline"], "baseline in the model card's attribution.baseline")
    if entry.get("blur_sigma_mm") is not None:
        sigma = entry["blur_sigma_mm"]
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ModelError(f"the model card's attribution.blur_sigma_mm must be a positive number, got {sigma!r}")
        out["sigma_mm"] = float(sigma)
    return out


def _named_baseline(card, prep: Prepared, opts: Dict[str, Any]) -> Dict[str, Any]:
    """Integrated gradients (occlusion when ``opts`` names one): the baseline named in ``opts`` (else the card's, else ``zero``)
    made on the whole network input, so a slice model's chunks share one (the ``mean``
    baseline's foreground is the volume's), the blur's sigma converted to voxels with the
    network grid's spacing (an explicit ``opts["sigma_mm"]`` is taken by ``blur`` only; any
    other baseline leaves it for :func:`_method_options` to refuse); ``opts["baseline"]``
    becomes that tensor. Returns what the result records: the name (and the blur's sigma in mm)."""
    defaults = card_baseline(card)
    base = opts.get("baseline", defaults.get("baseline", "zero"))
    if not isinstance(base, str) or base == "reference":
        return {}
    name = baseline_name(base)
    if name == "mirror":
        opts["baseline"] = baseline_tensor(prep.tensor, name, mirror_axis=_left_right_axis(prep))
        return {"baseline": name}
    if name != "blur":
        opts["baseline"] = baseline_tensor(prep.tensor, name)
        return {"baseline": name}
    sigma = opts.pop("sigma_mm", defaults.get("sigma_mm", BLUR_SIGMA_MM))
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise InputError(f"the blur baseline's sigma must be a positive number of mm, got {sigma!r}")
    sigma = float(sigma)
    sp = prep.net_volume.spacing  # ITK order (x, y, z); the tensor's spatial axes are (z, y, x) or (y, x)
    spacing_zyx = (sp[1], sp[0]) if prep.slicewise else (sp[2], sp[1], sp[0])
    opts["baseline"] = baseline_tensor(prep.tensor, name, sigma_mm=sigma, spacing_mm=spacing_zyx)
    return {"baseline": name, "sigma_mm": sigma}


def _left_right_axis(prep: Prepared) -> int:
    """The tensor axis of the network input that runs left-right in the patient (the network
    grid's axis whose direction is nearest LPS x), for the ``mirror`` baseline.

    Raises:
        InputError: a slice model whose slices are not across left-right (sagittal slices)."""
    d = np.asarray(prep.net_volume.direction, dtype=float).reshape(3, 3)
    itk_axis = int(np.argmax(np.abs(d[0])))  # column i: where grid axis i (x, y, z) points
    if prep.slicewise:
        if itk_axis == 2:
            raise InputError("the mirror baseline mirrors left-right within a slice; this model's slices run along the "
                             "left-right axis (sagittal)")
        return 3 - itk_axis  # (N, C, y, x)
    return 4 - itk_axis  # (N, C, z, y, x)


def _run_method(impl, prep: Prepared, out_index: int, opts: Dict[str, Any],
                progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> np.ndarray:
    """The method on the network input, channels summed: ``(z, y, x)`` on the network grid.

    A slice model runs in chunks of ``opts["slice_batch"]`` slices (default 16; the option is
    consumed here so it is not recorded as a method option).
    """
    import torch

    x = prep.tensor
    maps = []
    chunk = x.shape[0] if not prep.slicewise else max(1, int(opts.pop("slice_batch", 16)))
    for start in range(0, x.shape[0], chunk):
        check_cancel(cancel)
        chunk_opts = dict(opts)
        base = chunk_opts.get("baseline")
        if torch.is_tensor(base) and base.ndim == x.ndim and base.shape[0] == x.shape[0] > 1:
            # a per-slice reference baseline (slice model): the slices of this chunk
            chunk_opts["baseline"] = base[start:start + chunk]
        a = impl.attribute(x[start:start + chunk], target=out_index, **chunk_opts)
        maps.append(a.sum(dim=1).float().cpu().numpy())  # channels summed: (n, *spatial)
        done = min(start + chunk, x.shape[0])
        report(progress, 0.1 + 0.8 * min(1.0, (start + chunk) / x.shape[0]), f"{impl.name} {done}/{x.shape[0]}")
    net_map = np.concatenate(maps, axis=0)  # slice model: (z, y, x); 3D: (1, z, y, x)
    return net_map if prep.slicewise else net_map[0]


def _map_on_input_grid(prep: Prepared, net_map: np.ndarray, first: Volume, normalization: str,
                       method: str, target_name: str):
    """``(map Volume on the input grid, normalisation divisor, canonical normalisation name)``."""
    on_input = prep.to_input_grid(net_map)
    arr, scale, norm_name = normalize_map(on_input.array, normalization)
    out_vol = first.with_array(arr.astype(np.float32), modality=None, units="attribution", metadata={
        "attribution": {"method": method, "target": target_name, "normalization": norm_name}})
    return out_vol, scale, norm_name


def _prediction(names: List[str], probs: np.ndarray, slicewise: bool) -> Dict[str, Any]:
    """The class probabilities recorded with a map (a slice model: the highest over slices)."""
    pred: Dict[str, Any] = {"classes": names,
                            "probabilities": [float(p) for p in (probs.max(0) if slicewise else probs[0])]}
    if slicewise:
        pred["per_slice_max"] = True
    return pred


def _recorded_options(opts: Dict[str, Any]) -> Dict[str, Any]:
    """The options as a result records them: reference tensors named, not stored."""
    opts.pop("references", None)
    if "baseline" in opts and hasattr(opts["baseline"], "shape"):
        opts["baseline"] = "reference"
    return opts


# ---------------------------------------------------------------------------- sanity check
@dataclass
class RandomizationCheck:
    """Adebayo et al. (2018) model-parameter randomisation test.

    A method that explains the model must give a different map once the weights are
    randomised. ``spearman_abs`` (rank correlation of |maps|) and ``ssim`` near 1 mean the map
    does not depend on what the model learned: ``passed`` is ``spearman_abs < threshold``.
    """

    trained: AttributionMap
    randomized: AttributionMap
    spearman: float
    spearman_abs: float
    pearson: float
    ssim: float
    threshold: float
    passed: bool

    def to_dict(self) -> Dict[str, Any]:
        return {
            "method": self.trained.method,
            "spearman": self.spearman,
            "spearman_abs": self.spearman_abs,
            "pearson": self.pearson,
            "ssim": self.ssim,
            "threshold": self.threshold,
            "passed": self.passed,
        }


def randomize_weights(module, seed: int = 0):
    """A deep copy of ``module`` with every parameter re-initialised (``reset_parameters``),
    falling back to a normal draw with each tensor's own standard deviation."""
    import torch

    clone = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        touched = set()
        for m in clone.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
                touched.update(id(p) for p in m.parameters(recurse=False))
        with torch.no_grad():
            for p in clone.parameters():
                if id(p) not in touched:
                    p.normal_(0.0, float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 0.05)
    return clone


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    win = min(7, *[s if s % 2 else s - 1 for s in a.shape])
    if win < 3:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    rng = max(a.max() - a.min(), b.max() - b.min(), 1e-12)
    return float(structural_similarity(a, b, data_range=rng, win_size=win))


def randomization_check(
    model,
    volume: Union[Volume, Sequence[Volume]],
    method: str,
    target: Union[None, int, str] = None,
    *,
    seed: int = 0,
    threshold: float = 0.5,
    mask: Optional[Volume] = None,
    card=None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    **options: Any,
) -> RandomizationCheck:
    """Maps of the trained model and of a copy with randomised weights, and how alike they are.

    Similarities are computed on the max-abs-normalised maps over ``mask`` (default: all
    voxels); SSIM on |maps| over the whole grid. ONNX models cannot be randomised.
    """
    module, fn, card, _ = _model_parts(model, card)
    if module is None:
        raise ModelError("the randomisation check re-initialises weights, which an ONNX model does not expose; use a .pt model")
    options.setdefault("normalization", "max-abs")
    trained = attribute(module, volume, method, target, card=card, cancel=cancel,
                        progress=(lambda f, m: report(progress, 0.5 * f, m)) if progress else None, **options)
    rand_module = randomize_weights(module, seed)
    # explain the same class in both
    randomized = attribute(rand_module, volume, method, trained.target, card=card, cancel=cancel,
                           progress=(lambda f, m: report(progress, 0.5 + 0.5 * f, m)) if progress else None, **options)
    a, b = trained.volume.array, randomized.volume.array
    m = mask.array if isinstance(mask, Volume) else mask
    sp = map_correlation(a, b, mask=m, method="spearman")
    sp_abs = map_correlation(np.abs(a), np.abs(b), mask=m, method="spearman")
    pe = map_correlation(a, b, mask=m, method="pearson")
    ss = _ssim(np.abs(a), np.abs(b))
    return RandomizationCheck(trained, randomized, sp, sp_abs, pe, ss, float(threshold), bool(sp_abs < threshold))
