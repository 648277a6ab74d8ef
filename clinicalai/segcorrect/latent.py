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
  run is reproducible;
- **gradient optimisation of the code** (Painchaud et al.'s search proper,
  :func:`optimised_decodings`): from the posterior means of every latent group, ``steps``
  Adam steps on the codes, maximising the decoded softmax's agreement with the evidence
  (cross-entropy against the segmenter's probabilities where given, else against the raw
  one-hot mask) with a small pull back to the start; the argmax decoded after each step is
  one decoding ("latent search: optimised step k"). The path leaves the NVAE's plausible
  decoding towards what the evidence says, and its valid decodings are the nearest valid
  shapes in that direction. Deterministic (no noise is drawn).

Only the decodings that pass every validity criterion become candidates
(:func:`valid_decodings`); the evidence rule of :mod:`.candidates` judges them with the rest.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import LATENT_STEPS
from .corrector import is_context_model, one_hot_stack
from .validity import check_slice

#: decodes per invalid slice (the cost bound: one batched decoder pass each)
LATENT_DECODES = 4
#: posterior standard deviations are scaled by these, in turn (growing radii)
TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
PROBABILITIES_SOURCE = "latent search: segmenter probabilities"
#: Adam learning rate on the codes (latent units; posterior means are of order 1)
LATENT_LR = 0.1
#: weight of the pull back to the start: mean squared code change, summed over the groups,
#: against the mean cross-entropy per pixel (nats); 0.5 kept the path valid for more steps than
#: 0 or 0.05 on the crafted slices of Testing/segcorrect_correction/test_latent.py at lr 0.1
LATENT_PULL = 0.5
OPTIMISED_SOURCE = "latent search: optimised step {k}"


def supports_latent_search(module: Any) -> bool:
    """Whether ``module`` exposes the NVAE's posterior (:meth:`~clinicalai.networks.nvae.NVAE.encode` /
    ``decode`` with a temperature, ``posterior_means`` / ``decode_latents``): a TorchScript or foreign corrector does not, and is left out."""
    return all(callable(getattr(module, name, None)) for name in ("encode", "decode", "posterior_means", "decode_latents")) and hasattr(module, "groups_per_scale")


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


def optimised_decodings(
    module: Any,
    classes: np.ndarray,
    num_classes: int,
    probabilities: Optional[np.ndarray] = None,
    steps: int = LATENT_STEPS,
    lr: float = LATENT_LR,
    pull: float = LATENT_PULL,
    device: str = "cpu",
) -> Tuple[List[str], np.ndarray]:
    """The decodings along an optimisation of each slice's code: ``(names (steps,), softmax
    (steps, C, n, H, W))``, the k-th after k Adam steps (k = 1..steps).

    Args:
        module: an NVAE (:func:`supports_latent_search`) in eval mode; its weights are not changed.
        classes: class indices ``(n, H, W)`` in network space of the slices (as :func:`latent_decodings`).
        num_classes: background + labels.
        probabilities: the segmenter's softmax ``(C, n, H, W)`` in network space, or None; with it
            (a single-slice model) the start is the code of the probabilities and the target
            is them, else the start is the code of the one-hot mask and the target the mask.
        steps: Adam steps (0: none, ``([], empty)``).
        lr, pull: Adam learning rate; weight of the mean squared distance to the start code.
    """
    import torch

    shape = (0, num_classes) + classes.shape
    if steps <= 0 or classes.shape[0] == 0:
        return [], np.zeros(shape, np.float32)
    context = is_context_model(int(module.in_channels), num_classes)
    one_hot = one_hot_stack(classes, num_classes, context)  # (n, C_in, H, W)
    with_probs = probabilities is not None and not context
    target = np.moveaxis(probabilities, 0, 1).astype(np.float32) if with_probs else \
        one_hot_stack(classes, num_classes, False)
    target_t = torch.from_numpy(target).to(device)
    module.eval()
    with torch.no_grad():
        start = module.posterior_means(module.encode(torch.from_numpy(target if with_probs else one_hot).to(device)))
    codes = [z.detach().clone().requires_grad_(True) for z in start]
    optimiser = torch.optim.Adam(codes, lr=float(lr))
    out = np.empty((int(steps), classes.shape[0], num_classes) + classes.shape[1:], np.float32)
    for k in range(int(steps) + 1):
        logits = module.decode_latents(codes)
        if k > 0:  # the decoding after k steps (k = 0 is the start: already a candidate of its own)
            out[k - 1] = torch.softmax(logits.detach().float(), dim=1).cpu().numpy()
        if k == int(steps):
            break
        # per slice: mean cross-entropy per pixel plus the pull; summed, so slices do not interact
        ce = -(target_t * torch.log_softmax(logits, dim=1)).sum(1).mean(dim=(1, 2))
        moved = sum(((z - z0) ** 2).mean(dim=(1, 2, 3)) for z, z0 in zip(codes, start))
        loss = (ce + float(pull) * moved).sum()
        # gradients of the codes only: the weights' gradients are never computed or stored
        grads = torch.autograd.grad(loss, codes)
        optimiser.zero_grad(set_to_none=True)
        for z, g in zip(codes, grads):
            z.grad = g
        optimiser.step()
    return [OPTIMISED_SOURCE.format(k=k) for k in range(1, int(steps) + 1)], np.moveaxis(out, 2, 1)


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


__all__ = ["LATENT_DECODES", "LATENT_LR", "LATENT_PULL", "LATENT_STEPS", "OPTIMISED_SOURCE", "PROBABILITIES_SOURCE",
           "TEMPERATURES", "latent_decodings", "optimised_decodings", "supports_latent_search", "valid_decodings"]
