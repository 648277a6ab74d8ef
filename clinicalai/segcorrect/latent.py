"""Latent-space search for valid candidates (after Painchaud et al., IEEE TMI 2020).

Painchaud et al. search the latent space of a constrained autoencoder, around an invalid
segmentation's code, for the nearest decoding that is anatomically valid. Here, around the
NVAE corrector's encoding of an invalid slice, a fixed number of decodes per slice (batched,
so the cost is bounded and known):

- the decoding of the **segmenter's probabilities** (where there are some): the soft
  softmax as the network's input lands the code nearer to what the evidence says than the
  one-hot of its argmax does;
- **posterior samples at growing radii**: the hierarchical posterior's means plus
  ``temperature`` times its standard deviations times Gaussian noise, for temperatures from
  0.5 to 2 (a draw near the code first, then farther ones), from a seeded generator, so a
  run is reproducible.

Only the decodings that pass every validity criterion become candidates
(:func:`valid_decodings`); the evidence rule of :mod:`.candidates` judges them with the rest.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .corrector import is_context_model, one_hot_stack
from .validity import check_slice

#: decodes per invalid slice (the cost bound: one batched decoder pass each)
LATENT_DECODES = 4
#: posterior standard deviations are scaled by these, in turn (growing radii)
TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
PROBABILITIES_SOURCE = "latent search: segmenter probabilities"


def supports_latent_search(module: Any) -> bool:
    """Whether ``module`` exposes the NVAE's posterior (:meth:`~clinicalai.networks.nvae.NVAE.encode` /
    ``decode`` with a temperature): a TorchScript or foreign corrector does not, and is left out."""
    return all(callable(getattr(module, name, None)) for name in ("encode", "decode")) and hasattr(module, "groups_per_scale")


def _plan(n_decodes: int, with_probabilities: bool) -> List[Tuple[str, float]]:
    """``[(source name, temperature)]`` of the decodes of one slice; temperature 0 is the mean."""
    plan: List[Tuple[str, float]] = [(PROBABILITIES_SOURCE, 0.0)] if with_probabilities else []
    i = 0
    while len(plan) < n_decodes:
        t = TEMPERATURES[i % len(TEMPERATURES)]
        plan.append((f"latent search: sample at radius {t:g}", t))
        i += 1
    return plan


def latent_decodings(
    module: Any,
    classes: np.ndarray,
    num_classes: int,
    probabilities: Optional[np.ndarray] = None,
    n_decodes: int = LATENT_DECODES,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
) -> Tuple[List[str], np.ndarray]:
    """Decodings around the code of each slice: ``(names (K,), softmax (K, C, n, H, W))``.

    Args:
        module: an NVAE (:func:`supports_latent_search`) in eval mode.
        classes: class indices in network space ``(n, H, W)`` of the slices to search around
            (a context model sees each slice with background neighbours).
        num_classes: background + labels.
        probabilities: the segmenter's softmax in network space ``(C, n, H, W)``, or None;
            with it (and a single-slice model) the first decode is its posterior mean.
        n_decodes: K, decodes per slice.
        seed: the noise generator's seed (same seed, same decodings).
    """
    import torch

    context = is_context_model(int(module.in_channels), num_classes)
    with_probs = probabilities is not None and not context
    plan = _plan(int(n_decodes), with_probs)
    one_hot = one_hot_stack(classes, num_classes, context)  # (n, C_in, H, W)
    soft = np.moveaxis(probabilities, 0, 1).astype(np.float32) if with_probs else None
    n = one_hot.shape[0]
    # the encoder runs once per distinct input (one-hot, probabilities); each decode indexes it
    inputs = np.concatenate([one_hot, soft], axis=0) if with_probs else one_hot
    src = np.concatenate([np.arange(n) + (n if (with_probs and t == 0.0) else 0) for _, t in plan])
    temps = np.repeat(np.array([t for _, t in plan], np.float32), n)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    out = np.empty((src.shape[0], num_classes) + one_hot.shape[2:], np.float32)
    module.eval()
    with torch.inference_mode():
        features = module.encode(torch.from_numpy(inputs).to(device))
        for s in range(0, src.shape[0], batch_size):
            index = torch.from_numpy(src[s:s + batch_size]).to(device)
            tb = torch.from_numpy(temps[s:s + batch_size]).to(device).view(-1, 1, 1, 1)
            logits = module.decode([f[index] for f in features], sample=True, temperature=tb, generator=generator)[0]
            out[s:s + batch_size] = torch.softmax(logits.float(), dim=1).cpu().numpy()
    out = out.reshape((len(plan), n, num_classes) + one_hot.shape[2:])
    return [name for name, _ in plan], np.moveaxis(out, 2, 1)


def valid_decodings(decodings: Sequence[Tuple[str, np.ndarray]], values: Dict[str, int],
                    raw: np.ndarray) -> List[Tuple[str, np.ndarray]]:
    """The decodings ``[(name, labels (y, x))]`` that pass every validity criterion, differ from
    ``raw`` and from each other, in the given order."""
    kept: List[Tuple[str, np.ndarray]] = []
    for name, lab in decodings:
        if np.array_equal(lab, raw) or any(np.array_equal(lab, k) for _, k in kept):
            continue
        if check_slice(lab, values).valid:
            kept.append((name, lab))
    return kept


__all__ = ["LATENT_DECODES", "PROBABILITIES_SOURCE", "TEMPERATURES", "latent_decodings", "supports_latent_search",
           "valid_decodings"]
