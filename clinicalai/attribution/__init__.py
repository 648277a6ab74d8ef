"""Attribution maps for any 2D/3D classifier, scored against lesion masks (issue #5).

- :func:`attribute` (a Volume in, an :class:`AttributionMap` on the input grid out) and
  :func:`attribute_tensor` (a tensor ``(N, C, *spatial)`` in, a map tensor out);
- the methods by DESIGN.md name in :data:`METHODS`: gradient, gradient-x-input,
  integrated-gradients, expected-gradients, smoothgrad, guided-backprop, gradcam, gradcam++,
  occlusion;
- :func:`score_map` (Dice, AUROC, partial AUROC, AUPRC, pointing game, positive share) and
  :func:`map_correlation`;
- :func:`randomization_check` (Adebayo et al. sanity check);
- the attribution-constrained classifier in :mod:`clinicalai.attribution.constrained`.
"""

from .core import (
    NORMALIZATIONS,
    AttributionMap,
    RandomizationCheck,
    attribute,
    normalize_map,
    randomization_check,
    randomize_weights,
)
from .layers import conv_layer_names, default_cam_layer
from .methods import METHODS, AttributionMethod, attribute_tensor, get_method
from .metrics import choose_threshold, map_correlation, score_map, summarize_scores

METHOD_NAMES = tuple(METHODS)

__all__ = [
    "AttributionMap",
    "AttributionMethod",
    "METHODS",
    "METHOD_NAMES",
    "NORMALIZATIONS",
    "RandomizationCheck",
    "attribute",
    "attribute_tensor",
    "choose_threshold",
    "conv_layer_names",
    "default_cam_layer",
    "get_method",
    "map_correlation",
    "normalize_map",
    "randomization_check",
    "randomize_weights",
    "score_map",
    "summarize_scores",
]
