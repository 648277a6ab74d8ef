"""Inference of the NVAE mask corrector (:class:`clinicalai.networks.nvae.NVAE`).

The corrector works in the segmenter's network space: 2D slices of 128 x 128 pixels, one-hot
with one channel per class (background + the card's labels, in card order). With *context*
it sees the previous, current and next slice (12 channels); beyond each end of the volume a
background-only slice stands in.

Training (denoising, the card it writes, ``clinicalai train corrector``) lives in
:mod:`.corrector_training`: it validates through :mod:`.evaluate`, which runs the
correction workflow, which needs this module; kept apart, the imports form no circle.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import ModelError
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .labels import N_CLASSES


def one_hot_stack(labels: np.ndarray, num_classes: int, context: bool) -> np.ndarray:
    """Class-index slices ``(z, H, W)`` -> network input ``(z, C or 3C, H, W)`` float32.

    With ``context`` each sample is (previous, current, next) one-hot; a background-only slice
    stands beyond each end of the stack.
    """
    lab = np.asarray(labels)
    onehot = (lab[:, None] == np.arange(num_classes)[None, :, None, None]).astype(np.float32)
    if not context:
        return onehot
    background = np.zeros_like(onehot[:1])
    background[:, 0] = 1.0
    padded = np.concatenate([background, onehot, background], axis=0)
    return np.concatenate([padded[:-2], padded[1:-1], padded[2:]], axis=1)


def is_context_model(module_or_channels: Any, num_classes: int = N_CLASSES) -> bool:
    channels = module_or_channels if isinstance(module_or_channels, int) else module_or_channels.in_channels
    return int(channels) == 3 * num_classes


def correct_slices(
    module: Any,
    labels: np.ndarray,
    num_classes: int = N_CLASSES,
    batch_size: int = 16,
    device: str = "cpu",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """Run the corrector on class-index slices ``(z, H, W)``; softmax ``(num_classes, z, H, W)``.

    ``module`` is a torch NVAE (or any module mapping one-hot to logits); context is used when
    its ``in_channels`` is three times ``num_classes``.
    """
    import torch

    in_channels = getattr(module, "in_channels", num_classes)
    context = is_context_model(int(in_channels), num_classes)
    x = one_hot_stack(labels, num_classes, context)
    out = np.empty((x.shape[0], num_classes) + x.shape[2:], np.float32)
    module.eval()
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            check_cancel(cancel)
            t = torch.from_numpy(x[start:start + batch_size]).to(device)
            out[start:start + batch_size] = torch.softmax(module(t).float(), dim=1).cpu().numpy()
            report(progress, min(1.0, (start + batch_size) / x.shape[0]), "correcting slices")
    return np.moveaxis(out, 1, 0)



def check_corrector(model: Any) -> None:
    """Raise :class:`ModelError` unless ``model`` (a LoadedModel) is a usable torch mask corrector."""
    card = model.card
    if card.task != "mask-correction":
        raise ModelError(f"{card.name} is a {card.task} model, not a mask corrector (task 'mask-correction')")
    if card.spatial_dims != 2:
        raise ModelError(f"the corrector {card.name} must be a 2D model (slices), its card says {card.spatial_dims}D")
    n = len(card.labels) + 1
    if card.input.channels not in (n, 3 * n):
        raise ModelError(
            f"the corrector {card.name} takes {card.input.channels} channels; expected {n} (one-hot of "
            f"{n - 1} labels + background) or {3 * n} (with neighbouring slices)")


__all__ = ["check_corrector", "correct_slices", "is_context_model", "one_hot_stack"]
