"""Is this image like the ones the classifier was trained on? A feature-space distance.

A slice classifier answers with confidence on anything: the bundled lesion classifier gives a
real, healthy T1 brain P(lesion) 0.997 on some slice. Its maps then mean little, and nothing
said so. This module measures how far an image's slices lie from the training slices in the
network's own feature space: the input of its last ``Linear`` layer (the pooled features),
Mahalanobis distance under a Ledoit-Wolf covariance of the training slices (scikit-learn;
the standard feature-space detector of Lee et al., NeurIPS 2018, at one layer), the median
over the image's slices. A card's ``ood`` block holds the reference (mean, precision) and the
threshold: a margin over the largest distance of validation volumes of the training family.
:func:`feature_warning` turns a distance beyond it into one sentence for the user.

Measured on the bundled classifier (docs/attribution.md): validation phantoms 2.6-4.4,
MNI-template phantoms 5.5-6.5, a real T1 brain 7.7, a cardiac MRI 10.2, noise 8.7.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..errors import ModelError

#: the features compared, in words (the card says it too)
FEATURES = "input of the network's last Linear layer (pooled features), one vector per axial slice"
#: the threshold is this many times the largest median distance of a validation volume
THRESHOLD_MARGIN = 1.2


def _last_linear(module: Any) -> Any:
    import torch.nn as nn

    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("a feature-space distance needs a network that ends in a Linear layer")
    return linears[-1]


def slice_features(module: Any, tensor: Any) -> np.ndarray:
    """``(slices with content, features)``: the last Linear layer's input for each slice of a
    prepared input ``(N, C, H, W)`` (all-zero slices, outside the head, left out)."""
    import torch

    captured: Dict[str, Any] = {}
    handle = _last_linear(module).register_forward_pre_hook(lambda m, inputs: captured.__setitem__("x", inputs[0]))
    try:
        with torch.no_grad():
            module(tensor)
    finally:
        handle.remove()
    features = captured["x"].flatten(1).detach().cpu().numpy().astype(np.float64)
    content = tensor.detach().abs().flatten(1).amax(1).cpu().numpy() > 0
    return features[content] if content.any() else features


def volume_features(model: Any, volume: Any) -> np.ndarray:
    """:func:`slice_features` of ``volume`` prepared as :func:`~.core.attribute` prepares it."""
    from .preprocess import prepare_input

    prepared = prepare_input(volume, model.card, device="cpu")
    return slice_features(model.module, prepared.tensor.cpu())


def median_distance(features: np.ndarray, location: np.ndarray, precision: np.ndarray) -> float:
    centred = features - location
    per_slice = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, precision, centred), 0.0))
    return float(np.median(per_slice))


def feature_reference(model: Any, train_volumes: Sequence[Any], val_volumes: Sequence[Any], data: str = "") -> Dict[str, Any]:
    """The card's ``ood`` block: the training slices' feature mean and Ledoit-Wolf precision,
    the validation volumes' distances and the threshold (:data:`THRESHOLD_MARGIN` x their
    largest)."""
    from sklearn.covariance import LedoitWolf

    train = np.concatenate([volume_features(model, v) for v in train_volumes])
    fit = LedoitWolf().fit(train)
    location, precision = fit.location_, fit.precision_
    val = [median_distance(volume_features(model, v), location, precision) for v in val_volumes]
    return {
        "kind": "mahalanobis",
        "features": FEATURES,
        "location": [float(x) for x in location],
        "precision": [[float(x) for x in row] for row in precision],
        "threshold": float(THRESHOLD_MARGIN * max(val)),
        "training": {"slices": int(train.shape[0]), "data": data},
        "validation": {"volumes": len(val), "min": float(min(val)), "median": float(np.median(val)), "max": float(max(val))},
    }


def feature_distance(module: Any, tensor: Any, reference: Dict[str, Any]) -> float:
    """Median Mahalanobis distance of a prepared input's slices to the card's reference."""
    location = np.asarray(reference["location"], dtype=np.float64)
    precision = np.asarray(reference["precision"], dtype=np.float64)
    features = slice_features(module, tensor)
    if precision.shape != (location.size, location.size) or features.shape[1] != location.size:
        raise ModelError(f"the card's ood reference has {location.size} features, the network {features.shape[1]}")
    return median_distance(features, location, precision)


def feature_warning(module: Any, card: Any, tensor: Any) -> Optional[str]:
    """One sentence when the prepared input lies beyond the card's ``ood`` threshold, else
    ``None`` (also for a card without a reference, or a network without gradients)."""
    reference = card.extra_get("ood") if card is not None and hasattr(card, "extra_get") else None
    if not reference or module is None:
        return None
    try:
        distance = feature_distance(module, tensor.detach(), reference)
        threshold = float(reference["threshold"])
        seen = reference.get("validation") or {}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"the card's ood reference is malformed ({exc})") from None
    if distance <= threshold:
        return None
    span = f"{seen['min']:.1f}-{seen['max']:.1f}" if {"min", "max"} <= set(seen) else "below it"
    return (f"this image is unlike the images {card.name} was trained on (feature distance {distance:.1f}; its "
            f"validation images {span}, warning above {threshold:.1f}): its prediction and maps may mean little")
