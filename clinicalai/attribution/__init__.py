"""Attribution maps for any 2D/3D classifier, scored against lesion masks (issue #5).

- :func:`attribute` (a Volume in, an :class:`AttributionMap` on the input grid out) and
  :func:`attribute_tensor` (a tensor ``(N, C, *spatial)`` in, a map tensor out);
- the methods by DESIGN.md name in :data:`METHODS`: gradient, gradient-x-input,
  integrated-gradients, expected-gradients, smoothgrad, guided-backprop, gradcam, gradcam++,
  occlusion;
- :func:`score_map` (Dice, AUROC, partial AUROC, AUPRC, pointing game, positive share) and
  :func:`map_correlation`; the metric names in :data:`SCORE_KEYS` / :data:`HEADLINE_KEYS`;
- :func:`randomization_check` (Adebayo et al. sanity check);
- the attribution-constrained classifier in :mod:`clinicalai.attribution.constrained`.

The names are loaded on first use (PEP 562): the GUIs read the metric names of
:mod:`.metrics` at start-up without importing torch and captum.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the submodule that defines it
_SOURCES = {
    "NORMALIZATIONS": "core",
    "AttributionMap": "core",
    "RandomizationCheck": "core",
    "attribute": "core",
    "normalize_map": "core",
    "randomization_check": "core",
    "randomize_weights": "core",
    "conv_layer_names": "layers",
    "default_cam_layer": "layers",
    "METHODS": "methods",
    "AttributionMethod": "methods",
    "attribute_tensor": "methods",
    "get_method": "methods",
    "HEADLINE_KEYS": "metrics",
    "SCORE_KEYS": "metrics",
    "TABLE_KEYS": "metrics",
    "choose_threshold": "metrics",
    "map_correlation": "metrics",
    "score_map": "metrics",
    "summarize_scores": "metrics",
}

__all__ = sorted([*_SOURCES, "METHOD_NAMES"])


def __getattr__(name: str) -> Any:
    if name == "METHOD_NAMES":
        value: Any = tuple(__getattr__("METHODS"))
    elif name in _SOURCES:
        value = getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return __all__
