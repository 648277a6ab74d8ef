"""Attribution methods on tensors: one class per method, one ``attribute()`` entry (captum style).

Every method explains one output of a classifier, ``forward(x) -> logits (N, K)``, for an
input ``x`` of shape ``(N, C, *spatial)`` (2D or 3D, any number of channels) and returns a map

- ``(N, C, *spatial)`` for the input-space methods (gradient, gradient-x-input, integrated and
  expected gradients, smoothgrad, guided backprop, occlusion), signed;
- ``(N, 1, *spatial)`` for the CAM methods (gradcam, gradcam++), non-negative, upsampled
  linearly onto the input size exactly as ``monai.visualize`` does.

``target`` is the index of the explained output: for a multi-class head the class (default:
the predicted class of each sample); for a binary head with a single logit, ``0`` is that
logit (its sign says "towards the positive class"), the only valid index. :func:`attribute_tensor`
is the functional entry point; :data:`METHODS` is the registry by DESIGN.md name.

The work is done by captum (Saliency, InputXGradient, IntegratedGradients, GradientShap,
NoiseTunnel, GuidedBackprop, LayerGradCam, Occlusion). Hand-written here, and why:
Grad-CAM++ (captum has none; MONAI's ``GradCAMpp`` registers hooks on the model that are
never removed and mis-broadcasts the class score for batches of more than one sample);
the sampling loop of Expected Gradients (captum's ``GradientShap`` is the EG estimator but
draws all samples in one batch); the choice of batch size from free device memory.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Type, Union

import numpy as np

from ..errors import InputError, ModelError
from ..models import LoadedModel
from ..models.layout import cam_to_engine_order
from .layers import get_layer, resolve_layer

Target = Union[None, int, Sequence[int], "torch.Tensor"]  # noqa: F821


# ---------------------------------------------------------------------------- forward wrapper
def _as_logits(out):
    import torch

    if isinstance(out, (tuple, list)):
        out = out[0]
    elif isinstance(out, dict):
        out = next(iter(out.values()))
    if not torch.is_tensor(out):
        raise ModelError(f"the network returned {type(out).__name__}, not a tensor of class scores")
    if out.ndim == 1:
        out = out.unsqueeze(1)
    if out.ndim != 2:
        raise ModelError(
            f"attribution explains a classifier (one score per class, shape (N, K)); this network "
            f"returns shape {tuple(out.shape)}, which looks like a segmentation or image output"
        )
    return out


def _head_module():
    import torch.nn as nn

    class LogitHead(nn.Module):
        """``module`` with its output reduced to logits ``(N, K)`` (times ``sign``)."""

        def __init__(self, module, sign: float = 1.0):
            super().__init__()
            self.module = module
            self.sign = float(sign)

        def forward(self, x):
            out = _as_logits(self.module(x))
            return out * self.sign if self.sign != 1.0 else out

    return LogitHead


class _CallableHead:
    """A non-torch forward (onnxruntime) as a tensor -> logits function, without gradients."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], sign: float = 1.0):
        self.fn = fn
        self.sign = float(sign)

    def __call__(self, x):
        import torch

        out = np.asarray(self.fn(x.detach().cpu().numpy().astype(np.float32)))
        return _as_logits(torch.from_numpy(out).to(x.device)) * self.sign


def _is_module(model) -> bool:
    import torch.nn as nn

    return isinstance(model, nn.Module)


@contextlib.contextmanager
def explaining(module):
    """Eval mode and no in-place activations while explaining; both restored afterwards.

    In-place ReLUs (MONAI's ResNet) break the backward hooks captum registers (guided
    backprop) and overwrite layer outputs that Grad-CAM differentiates.
    """
    if not _is_module(module):
        yield module
        return
    was_training = module.training
    flipped = []
    for m in module.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
            flipped.append(m)
    module.eval()
    try:
        yield module
    finally:
        for m in flipped:
            m.inplace = True
        module.train(was_training)


# ---------------------------------------------------------------------------- batch sizing
def _available_bytes(device) -> int:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free * 0.6)
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if ":" in line}
        avail = info.get("MemAvailable", 8 << 30)
    except OSError:
        avail = 8 << 30
    return int(min(avail * 0.25, 4 << 30))  # CPU: a quarter of free RAM, at most 4 GiB


def activation_bytes(module, x1) -> int:
    """Bytes of the forward activations of one sample ``x1`` ``(1, C, *spatial)`` (leaf
    modules' outputs, measured with forward hooks in one pass without gradients)."""
    import torch

    total = [0]
    handles = []
    for m in module.modules():
        if next(m.children(), None) is None:
            def hook(_m, _i, out):
                if torch.is_tensor(out):
                    total[0] += out.numel() * out.element_size()
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x1)
    finally:
        for h in handles:
            h.remove()
    return max(total[0], x1.numel() * x1.element_size())


def auto_batch_size(model, x, maximum: int = 32) -> int:
    """How many forward+backward evaluations fit at once on ``x``'s device.

    Backward needs the forward activations plus their gradients (about 3x the activations of
    a forward pass); the budget is 60 % of free GPU memory, or a quarter of free RAM (at most
    4 GiB) on the CPU. ``CLINICALAI_ATTRIBUTION_BATCH`` overrides it.
    """
    env = os.environ.get("CLINICALAI_ATTRIBUTION_BATCH")
    if env:
        return max(1, int(env))
    if not _is_module(model):
        per = x[:1].numel() * 4 * 4
    else:
        per = 3 * activation_bytes(model, x[:1])
    return int(max(1, min(maximum, _available_bytes(x.device) // max(per, 1))))


# ---------------------------------------------------------------------------- base class
class AttributionMethod:
    """Base class: a method bound to a model. Subclasses implement :meth:`_attribute`.

    Args:
        model: a ``torch.nn.Module`` returning logits ``(N, K)`` (or a tuple/dict whose first
            item is), or for perturbation methods any ``numpy batch -> logits`` callable (ONNX).
        sign: multiply the logits by this (``-1`` explains the negative class of a one-logit head).
    """

    name: str = ""
    signed: bool = True
    needs_gradients: bool = True
    layer_based: bool = False

    def __init__(self, model, sign: float = 1.0) -> None:
        if _is_module(model):
            self.module = model
            self.forward = _head_module()(model, sign)
        elif callable(model):
            if self.needs_gradients:
                raise ModelError(
                    f"{self.name} needs gradients, which this model (ONNX / a plain function) cannot give; "
                    "use a .pt model, or a perturbation method such as occlusion"
                )
            self.module = None
            self.forward = _CallableHead(model, sign)
        else:
            raise ModelError(f"cannot explain a {type(model).__name__}: expected a torch module or an ONNX model")

    # -- shared checks
    def check_input(self, x):
        import torch

        if not torch.is_tensor(x):
            raise InputError("attribution needs a torch tensor of shape (N, C, *spatial)")
        if x.ndim not in (4, 5):
            raise InputError(f"attribution needs a 2D or 3D batch (N, C, *spatial), got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise InputError("the input holds NaN or infinite values")
        return x.detach().float()

    def resolve_target(self, x, target: Target):
        """Per-sample target indices ``(N,)`` (checked against the number of outputs)."""
        import torch

        with torch.no_grad():
            logits = self.forward(x)
        k = int(logits.shape[1])
        n = int(x.shape[0])
        if target is None:
            t = logits.argmax(1) if k > 1 else torch.zeros(n, dtype=torch.long, device=x.device)
        else:
            t = torch.as_tensor(target, dtype=torch.long, device=x.device).reshape(-1)
            if t.numel() == 1:
                t = t.expand(n)
            if t.numel() != n:
                raise InputError(f"target has {t.numel()} values for {n} inputs")
        bad = [int(v) for v in t.tolist() if not 0 <= int(v) < k]
        if bad:
            what = "one logit (binary head): the only target is 0" if k == 1 else f"{k} outputs: targets 0..{k - 1}"
            raise InputError(f"target {bad[0]} is out of range; the model has {what}")
        return t.clone(), logits

    def attribute(self, x, target: Target = None, **options: Any):
        """The map for ``x`` ``(N, C, *spatial)``: see the module docstring for shapes."""
        x = self.check_input(x)
        t, _ = self.resolve_target(x, target)
        with explaining(self.module), warnings.catch_warnings():
            # captum's notes that it set requires_grad / hooks ReLUs: expected, not news to a user
            warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
            warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU.*")
            out = self._attribute(x, t, **options)
        return out.detach()

    def _attribute(self, x, target, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    def batch_size(self, x, options: Dict[str, Any]) -> int:
        ibs = options.pop("internal_batch_size", None)
        return int(ibs) if ibs else auto_batch_size(self.module if self.module is not None else self.forward, x)


def _reject(options: Dict[str, Any], method: str) -> None:
    if options:
        raise InputError(f"{method} does not take option(s) {', '.join(sorted(options))}")


# ---------------------------------------------------------------------------- gradient methods
class Gradient(AttributionMethod):
    """Saliency: the gradient of the target logit w.r.t. the input (captum ``Saliency``,
    signed; ``abs=True`` for the classic absolute saliency)."""

    name = "gradient"

    def _attribute(self, x, target, abs: bool = False, **options):  # noqa: A002
        from captum.attr import Saliency

        _reject(options, self.name)
        return Saliency(self.forward).attribute(x, target=target, abs=bool(abs))


class GradientXInput(AttributionMethod):
    """Gradient x input (captum ``InputXGradient``)."""

    name = "gradient-x-input"

    def _attribute(self, x, target, **options):
        from captum.attr import InputXGradient

        _reject(options, self.name)
        return InputXGradient(self.forward).attribute(x, target=target)


#: named baselines of the path methods (Sturmfels et al., Distill 2020, "Visualizing the Impact
#: of Feature Attribution Baselines"): ``zero`` (all zeros, the default), ``blur`` (the input
#: blurred by a Gaussian of ``sigma_mm``), ``mean`` (the foreground's mean intensity inside the
#: foreground, the input elsewhere), ``mirror`` (the input mirrored left-right about its
#: foreground's centre: each hemisphere's baseline is the other one, a pseudo-healthy reference
#: for a one-sided lesion whatever its polarity, dark in T1 as bright in FLAIR)
BASELINES = ("zero", "blur", "mean", "mirror")
Baseline = Literal["zero", "blur", "mean", "mirror"]
#: older spellings still accepted (``zeros`` was the command line's default before the names above)
_BASELINE_ALIASES = {"zeros": "zero", "blurred": "blur"}
#: default Gaussian sigma of the ``blur`` baseline, in mm (about a lesion's radius: a blurred
#: lesion takes its surroundings' intensity, so (x - x') is large on it)
BLUR_SIGMA_MM = 8.0


def baseline_name(name: str, what: str = "baseline") -> str:
    """The canonical name of a named baseline; :class:`InputError` naming the choices otherwise."""
    key = str(name).strip().lower()
    key = _BASELINE_ALIASES.get(key, key)
    if key not in BASELINES:
        raise InputError(f"unknown {what} {name!r}; choose one of {', '.join(BASELINES)}")
    return key


def blurred_baseline(x, sigma_mm: float = BLUR_SIGMA_MM, spacing_mm: Optional[Sequence[float]] = None):
    """``x`` ``(N, C, *spatial)`` blurred per sample by a Gaussian of ``sigma_mm`` (MONAI
    ``GaussianSmooth``, all channels). ``spacing_mm``: voxel size per spatial axis, in the
    tensor's order (default 1 mm, so the sigma is in voxels); a 2D slice batch is blurred in plane."""
    import torch
    from monai.transforms import GaussianSmooth

    spacing = [1.0] * (x.ndim - 2) if spacing_mm is None else [float(s) for s in spacing_mm]
    if len(spacing) != x.ndim - 2 or any(s <= 0 for s in spacing):
        raise InputError(f"the blur baseline needs {x.ndim - 2} positive voxel sizes (mm), got {spacing_mm!r}")
    if not float(sigma_mm) > 0:
        raise InputError(f"the blur baseline's sigma must be a positive number of mm, got {sigma_mm!r}")
    smooth = GaussianSmooth(sigma=[float(sigma_mm) / s for s in spacing])
    return torch.stack([torch.as_tensor(smooth(xi)) for xi in x]).to(x.device, x.dtype)


def foreground_mean_baseline(x):
    """``x`` ``(N, C, *spatial)`` with its foreground set to the foreground's mean, per channel.

    Foreground: the voxels above Otsu's threshold of the channel over the whole batch (a slice
    model's batch is the volume's slices, so every slice gets the same value). The background
    keeps the input's values: it gets no attribution, and the path changes the tissue only.
    """
    import torch
    from skimage.filters import threshold_otsu

    base = x.clone()
    for c in range(x.shape[1]):
        values = x[:, c].detach().cpu().numpy()
        if float(np.ptp(values)) == 0:
            continue  # a flat channel: no foreground to average, the baseline is the input
        fg = x[:, c] > float(threshold_otsu(values))
        base[:, c] = torch.where(fg, x[:, c][fg].mean(), x[:, c])
    return base


def mirrored_baseline(x, axis: int):
    """``x`` ``(N, C, *spatial)`` mirrored along tensor axis ``axis`` (the left-right one) about
    the centre of its foreground (Otsu over the batch, the first channel; a slice model's batch
    is the volume's slices, so all share one mid-plane), not the array's middle: a head is
    rarely centred in its field of view. What the mirror brings in from beyond the array is
    the input's minimum (background).

    Why by hand: MONAI's ``Flip`` mirrors about the array's middle only."""
    import torch
    from skimage.filters import threshold_otsu

    if not 2 <= axis < x.ndim:
        raise InputError(f"the mirror baseline needs a spatial axis of the input, got axis {axis} of {x.ndim}")
    values = x[:, 0].detach().cpu().numpy()
    fg = values > float(threshold_otsu(values)) if float(np.ptp(values)) > 0 else np.ones_like(values, bool)
    profile = fg.sum(axis=tuple(d for d in range(fg.ndim) if d != axis - 1)).astype(float)
    width = x.shape[axis]
    centre = float((profile * np.arange(width)).sum() / max(profile.sum(), 1.0))
    shift = int(round(2.0 * centre - (width - 1)))  # index i of the flipped array lands on i + shift
    flipped = torch.flip(x, dims=[axis])
    out = torch.full_like(x, float(x.min()))
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    src[axis] = slice(max(0, -shift), width - max(0, shift))
    dst[axis] = slice(max(0, shift), width - max(0, -shift))
    out[tuple(dst)] = flipped[tuple(src)]
    return out


def baseline_tensor(x, baseline: Union[str, float, Any] = "zero", sigma_mm: float = BLUR_SIGMA_MM,
                    spacing_mm: Optional[Sequence[float]] = None, mirror_axis: Optional[int] = None):
    """The baseline ``(N, C, *spatial)`` of a path method for ``x`` ``(N, C, *spatial)``.

    ``baseline``: a name of :data:`BASELINES`, a number (a constant image) or a reference tensor
    ``(C, *spatial)`` / ``(N or 1, C, *spatial)``. ``sigma_mm`` / ``spacing_mm``: the ``blur``
    baseline's Gaussian (see :func:`blurred_baseline`); ``mirror_axis``: the ``mirror``
    baseline's left-right tensor axis (:func:`mirrored_baseline`; default the last).
    """
    import torch

    if baseline is None or isinstance(baseline, str):
        name = baseline_name(baseline or "zero")
        if name == "blur":
            return blurred_baseline(x, sigma_mm, spacing_mm)
        if name == "mean":
            return foreground_mean_baseline(x)
        if name == "mirror":
            return mirrored_baseline(x, x.ndim - 1 if mirror_axis is None else int(mirror_axis))
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    b = torch.as_tensor(np.asarray(baseline) if not torch.is_tensor(baseline) else baseline, dtype=x.dtype).to(x.device)
    if b.ndim == x.ndim - 1:
        b = b.unsqueeze(0)
    if tuple(b.shape[1:]) != tuple(x.shape[1:]) or b.shape[0] not in (1, x.shape[0]):
        raise InputError(
            f"the reference baseline has shape {tuple(b.shape)}; it must match the input {tuple(x.shape[1:])}"
        )
    return b.expand_as(x).contiguous()


class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (captum ``IntegratedGradients``, its ``baselines=``).

    ``baseline``: ``"zero"`` (default), ``"blur"`` (the input blurred by a Gaussian of
    ``sigma_mm``; ``spacing_mm`` is the voxel size per spatial axis in the tensor's order,
    default 1 mm), ``"mean"`` (the foreground's mean in the foreground), ``"mirror"`` (the input
    mirrored about its foreground's centre along the last axis; :func:`clinicalai.attribution.attribute`
    finds the left-right axis from the image's geometry), a number, or a reference tensor
    ``(C, *spatial)`` / ``(N, C, *spatial)``. ``n_steps`` along the straight
    path, evaluated ``internal_batch_size`` at a time.
    """

    name = "integrated-gradients"
    baselines = BASELINES

    def _attribute(self, x, target, baseline: Union[Baseline, float, Any] = "zero", n_steps: int = 32,
                   sigma_mm: float = BLUR_SIGMA_MM, spacing_mm: Optional[Sequence[float]] = None,
                   method: str = "gausslegendre", **options):
        from captum.attr import IntegratedGradients as CaptumIG

        ibs = self.batch_size(x, options)
        _reject(options, self.name)
        base = baseline_tensor(x, baseline, sigma_mm, spacing_mm)
        return CaptumIG(self.forward).attribute(
            x, baselines=base, target=target, n_steps=int(n_steps), method=method,
            internal_batch_size=max(ibs, x.shape[0]),
        )


class ExpectedGradients(AttributionMethod):
    """Expected Gradients (Erion et al. 2021): IG averaged over baselines drawn from a set of
    reference (healthy) inputs, one random baseline and one random point on its path per
    sample: ``E_{x'~refs, a~U(0,1)} [(x - x') * dF/dx (x' + a (x - x'))]``.

    captum's ``GradientShap`` with ``stdevs=0`` is exactly this estimator (it draws a baseline
    and an interpolation point per sample); it runs all samples in one batch, so this loop
    draws ``n_samples`` in rounds of ``internal_batch_size`` and averages them.
    """

    name = "expected-gradients"

    def _attribute(self, x, target, references=None, n_samples: int = 32, seed: Optional[int] = 0, **options):
        import torch
        from captum.attr import GradientShap

        ibs = self.batch_size(x, options)
        _reject(options, self.name)
        if references is None:
            raise InputError(
                "expected-gradients needs reference inputs (e.g. healthy volumes) to draw baselines from; "
                "pass references=..."
            )
        refs = torch.as_tensor(references if torch.is_tensor(references) else np.asarray(references), dtype=x.dtype).to(x.device)
        if refs.ndim == x.ndim - 1:
            refs = refs.unsqueeze(0)
        if tuple(refs.shape[1:]) != tuple(x.shape[1:]):
            raise InputError(f"references have shape {tuple(refs.shape[1:])}, the input {tuple(x.shape[1:])}")
        per_round = max(1, ibs // x.shape[0])
        total = torch.zeros_like(x)
        done = 0
        rng_devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            gs = GradientShap(self.forward)
            while done < int(n_samples):
                k = min(per_round, int(n_samples) - done)
                total += k * gs.attribute(x, baselines=refs, n_samples=k, stdevs=0.0, target=target)
                done += k
        return total / max(done, 1)


class SmoothGrad(AttributionMethod):
    """SmoothGrad (captum ``NoiseTunnel`` over ``Saliency``): the gradient averaged over
    ``nt_samples`` noisy copies; the noise standard deviation is ``noise_level`` times the
    input's value range (Smilkov et al. use 10-20 %)."""

    name = "smoothgrad"

    def _attribute(self, x, target, nt_samples: int = 16, noise_level: float = 0.15, abs: bool = False,  # noqa: A002
                   seed: Optional[int] = 0, **options):
        import torch
        from captum.attr import NoiseTunnel, Saliency

        ibs = self.batch_size(x, options)
        _reject(options, self.name)
        stdev = float(noise_level) * float((x.max() - x.min()).item() or 1.0)
        rng_devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            return NoiseTunnel(Saliency(self.forward)).attribute(
                x, nt_type="smoothgrad", nt_samples=int(nt_samples),
                nt_samples_batch_size=max(1, ibs // x.shape[0]), stdevs=stdev, target=target, abs=bool(abs),
            )


class GuidedBackprop(AttributionMethod):
    """Guided backpropagation (captum): only positive gradients flow back through ReLUs.
    Needs ``nn.ReLU`` modules (a network calling ``F.relu`` cannot be guided)."""

    name = "guided-backprop"

    def _attribute(self, x, target, **options):
        import torch.nn as nn
        from captum.attr import GuidedBackprop as CaptumGB

        _reject(options, self.name)
        if not any(isinstance(m, nn.ReLU) for m in self.module.modules()):
            raise ModelError("guided backprop needs a network with nn.ReLU modules; this one has none")
        return CaptumGB(self.forward).attribute(x, target=target)


def upsample_like(cam, x):
    """CAM ``(N, 1, *small)`` -> ``(N, 1, *x.spatial)``, (bi/tri)linear, ``align_corners=False``
    (as ``monai.visualize.default_upsampler``)."""
    import torch.nn.functional as F

    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.ndim - 2]
    return F.interpolate(cam, size=tuple(x.shape[2:]), mode=mode, align_corners=False)


class GradCAM(AttributionMethod):
    """Grad-CAM (captum ``LayerGradCam``, ReLU applied) on ``layer`` (a module name; default
    the last convolutional block), upsampled to the input size."""

    name = "gradcam"
    signed = False
    layer_based = True

    def _attribute(self, x, target, layer: Optional[str] = None, **options):
        from captum.attr import LayerGradCam

        _reject(options, self.name)
        name = resolve_layer(self.module, layer, x[:1])
        cam = LayerGradCam(self.forward, get_layer(self.module, name)).attribute(
            x, target=target, relu_attributions=True
        )
        self.layer = name
        return upsample_like(cam_to_engine_order(cam, self.module), x)


class GradCAMPlusPlus(AttributionMethod):
    """Grad-CAM++ (Chattopadhyay et al. 2018), the closed form MONAI's ``GradCAMpp`` uses,
    per sample. MONAI's weights carry an extra factor exp(score), a positive constant per
    sample that only scales the map (and overflows for large logits): it is left out, so the
    maps agree after normalisation."""

    name = "gradcam++"
    signed = False
    layer_based = True

    def _attribute(self, x, target, layer: Optional[str] = None, **options):
        import torch
        import torch.nn.functional as F

        _reject(options, self.name)
        name = resolve_layer(self.module, layer, x[:1])
        mod = get_layer(self.module, name)
        store: Dict[str, Any] = {}

        def hook(_m, _i, out):
            store["acti"] = out

        handle = mod.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                xi = x.clone().requires_grad_(True)  # so the layer output needs grad even for frozen weights
                logits = self.forward(xi)
                acti = store["acti"]
                score = logits.gather(1, target.view(-1, 1)).sum()
                (grad,) = torch.autograd.grad(score, acti)
        finally:
            handle.remove()
        acti = acti.detach()
        b, c = grad.shape[:2]
        spatial_ones = [1] * (grad.ndim - 2)
        alpha_nr = grad.pow(2)
        alpha_dr = alpha_nr.mul(2) + acti.mul(grad.pow(3)).view(b, c, -1).sum(-1).view(b, c, *spatial_ones)
        alpha_dr = torch.where(alpha_dr != 0.0, alpha_dr, torch.ones_like(alpha_dr))
        alpha = alpha_nr.div(alpha_dr + 1e-7)
        weights = (alpha * F.relu(grad)).view(b, c, -1).sum(-1).view(b, c, *spatial_ones)
        cam = F.relu((weights * acti).sum(1, keepdim=True))
        self.layer = name
        return upsample_like(cam_to_engine_order(cam, self.module), x)


class Occlusion(AttributionMethod):
    """Occlusion (captum): the drop of the target logit when a patch (all channels) is replaced
    by ``baseline``; ``patch`` and ``stride`` in voxels per spatial axis (default: 1/8 of each
    axis, stride = patch). Needs only forward passes, so it also explains ONNX models.

    ``baseline``: a number (default 0), a name of :data:`BASELINES` (``blur``: the patch takes
    the input blurred by a Gaussian of ``sigma_mm``, i.e. the tissue around it, so a region
    scores by how much it differs from its surroundings rather than from 0) or a tensor like
    ``x``."""

    name = "occlusion"
    needs_gradients = False
    baselines = BASELINES

    def _attribute(self, x, target, patch=None, stride=None, baseline: Union[Baseline, float, Any] = 0.0,
                   sigma_mm: float = BLUR_SIGMA_MM, spacing_mm: Optional[Sequence[float]] = None, **options):
        from captum.attr import Occlusion as CaptumOcclusion

        ibs = self.batch_size(x, options)
        _reject(options, self.name)
        if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
            baseline = float(baseline)  # captum takes a number as it is (the map before named baselines)
        else:
            baseline = baseline_tensor(x, baseline, sigma_mm, spacing_mm)
        spatial = tuple(int(s) for s in x.shape[2:])
        patch_t = _per_axis(patch, spatial, default=[max(1, s // 8) for s in spatial], what="patch")
        stride_t = _per_axis(stride, spatial, default=list(patch_t), what="stride")
        c = int(x.shape[1])
        return CaptumOcclusion(self.forward).attribute(
            x, sliding_window_shapes=(c, *patch_t), strides=(c, *stride_t), baselines=baseline,
            target=target, perturbations_per_eval=max(1, ibs),
        )


def _per_axis(value, spatial, default, what: str):
    if value is None:
        out = list(default)
    elif isinstance(value, (int, np.integer)):
        out = [int(value)] * len(spatial)
    else:
        out = [int(v) for v in value]
    if len(out) != len(spatial) or any(v < 1 for v in out):
        raise InputError(f"occlusion {what} needs {len(spatial)} positive sizes (voxels), got {value!r}")
    return tuple(min(v, s) for v, s in zip(out, spatial))


#: the registry, by the names of DESIGN.md
METHODS: Dict[str, Type[AttributionMethod]] = {
    cls.name: cls
    for cls in (Gradient, GradientXInput, IntegratedGradients, ExpectedGradients, SmoothGrad,
                GuidedBackprop, GradCAM, GradCAMPlusPlus, Occlusion)
}


def get_method(name: str) -> Type[AttributionMethod]:
    """The method class for a DESIGN.md name; :class:`InputError` listing the names otherwise."""
    key = (name or "").strip().lower()
    if key not in METHODS:
        raise InputError(f"unknown attribution method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[key]


def attribute_tensor(module, x, method: str, target: Target = None, layer: Optional[str] = None, **options: Any):
    """Explain ``module`` on ``x`` ``(N, C, *spatial)`` with ``method`` (a DESIGN.md name).

    Args:
        module: ``torch.nn.Module`` returning logits ``(N, K)``, a ``LoadedModel`` (ONNX models
            get occlusion only), or for occlusion a ``numpy batch -> logits`` callable.
        target: output index explained (default: predicted class; ``0`` for a one-logit head).
        layer: module name for gradcam / gradcam++ (default: the last conv block).
        options: method options (``n_steps``, ``baseline``, ``references``, ``n_samples``,
            ``nt_samples``, ``noise_level``, ``patch``, ``stride``, ``internal_batch_size``, ...).

    Returns:
        a tensor ``(N, C, *spatial)`` (input-space methods) or ``(N, 1, *spatial)`` (CAMs).
    """
    cls = get_method(method)
    model = _unwrap_loaded(module, cls)
    m = cls(model)
    if cls.layer_based:
        options["layer"] = layer
    elif layer is not None:
        raise InputError(f"{cls.name} does not use a layer (only gradcam and gradcam++ do)")
    return m.attribute(x, target=target, **options)


def _unwrap_loaded(model, cls: Type[AttributionMethod]):
    if isinstance(model, LoadedModel):
        if model.module is not None:
            return model.module
        if cls.needs_gradients:
            model.torch_module(f"{cls.name}")  # raises the clear ModelError
        return lambda batch: model.predict(batch)
    return model


__all__: List[str] = [
    "AttributionMethod", "BASELINES", "BLUR_SIGMA_MM", "Baseline", "METHODS", "attribute_tensor", "auto_batch_size",
    "baseline_name", "baseline_tensor", "blurred_baseline", "explaining", "foreground_mean_baseline", "get_method",
    "upsample_like",
] + [c.__name__ for c in METHODS.values()]
