"""Is this input like the ones a network was trained on? A distance in the network's own features.

A classifier answers with confidence on anything: the bundled lesion classifier gives a real,
healthy T1 brain P(lesion) 0.997 on some slice, and the PET fold ensemble gives a cube of noise
P(recurrence) 0.99. This module measures how far an input lies from the training inputs in
the network's feature space, the standard feature-space detector of Lee et al. (NeurIPS 2018):
Mahalanobis distance under a Ledoit-Wolf covariance of the training features (scikit-learn).
Two kinds of features, named by the reference itself:

- ``layers`` empty (the lesion classifier's cards): the input of the network's last
  ``Linear`` layer, its pooled features;
- ``layers`` named (the PET folds): per-channel mean and maximum of those layers' outputs, one
  statistic per channel and layer (Lee et al. pool each layer the same way). A global-max-pooled
  head maps noise and a hot lesion alike; the mean activation of each block does not.

Each input item of a batch ``(N, C, ...)`` gives one feature vector; an input's distance is
the median over its items (the slices of a slice classifier; one item for a 3D network).
A card's ``ood`` block holds the reference (mean, precision, layers; for a wide layer also the
``projection`` its statistics are reduced with) and the threshold: a margin over the largest
distance of validation inputs that no training step saw.

torch and scikit-learn are imported inside the functions (numpy only at import).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import ModelError

#: the threshold is this many times the largest distance of a validation input
THRESHOLD_MARGIN = 1.2
#: what the features of a reference without ``layers`` are, in words (the card says it too)
LAST_LINEAR_FEATURES = "input of the network's last Linear layer (pooled features)"
#: :func:`feature_layers` keeps the last convolutions whose channels add up to at most this
#: (two statistics per channel; the card stores a square precision matrix of that size)
LAYER_CHANNEL_BUDGET = 128
#: a last convolution with fewer channels than this is an output head (class maps), not features
MIN_LAST_CHANNELS = 8
#: above this many features the reference is taken in a reduced space (:func:`fit_reference`):
#: the principal components of the training features and the distance to their span
MAX_DIRECT_FEATURES = 256
REDUCED_COMPONENTS = 32


def feature_layers(module: Any, budget: int = LAYER_CHANNEL_BUDGET) -> List[str]:
    """Names of the network's last convolutions whose output channels add up to at most
    ``budget``, or the last convolution alone when it is wider (the study's networks: 256-2048
    channels; :func:`fit_reference` then reduces its statistics): the layers whose statistics a
    reference of that network uses. Empty when the last convolution is the network's own
    output (a convolutional classifier head of a few channels): no reference then."""
    import torch.nn as nn

    convs = [(name, m.out_channels) for name, m in module.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not convs:
        raise ModelError("a feature-space reference by layers needs a network with convolutions")
    if convs[-1][1] < MIN_LAST_CHANNELS:
        return []
    chosen, total = [], 0
    for name, channels in reversed(convs):
        if chosen and total + channels > budget:
            break
        chosen.insert(0, name)
        total += channels
    return chosen


def layer_description(layers: Sequence[str]) -> str:
    return "per-channel mean and maximum of the outputs of " + ", ".join(layers)


def _last_linear(module: Any) -> Any:
    import torch.nn as nn

    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("a feature-space distance needs a network that ends in a Linear layer")
    return linears[-1]


class FeatureCapture:
    """While open, keeps a reference's features of every forward pass of ``module``, so the
    distance can be taken from the prediction's own pass instead of a second one.

    Hooks reduce each pass at once (per-channel mean and maximum of each named layer's output, or
    the last Linear layer's input when ``layers`` is empty), so no activation map is held.
    :meth:`features` takes the last items seen: a prediction that retries after running out of
    memory (:meth:`clinicalai.models.LoadedModel.predict` halves its chunks) ends with one
    complete pass over the batch, in order.

    Example::

        with FeatureCapture(module, layers) as capture:
            logits = loaded.predict(batch)
        features = capture.features(batch)
    """

    def __init__(self, module: Any, layers: Sequence[str] = ()) -> None:
        named = dict(module.named_modules())
        missing = [name for name in layers if name not in named]
        if missing:
            raise ModelError(f"the network has no layer {', '.join(missing)} (the card's ood reference names it)")
        self.layers = [str(name) for name in layers]
        self._targets = [named[name] for name in self.layers] if self.layers else [_last_linear(module)]
        self._rows: List[List[np.ndarray]] = [[] for _ in self._targets]
        self._handles: List[Any] = []

    def __enter__(self) -> "FeatureCapture":
        def statistics(i):
            def hook(m, inputs, output):
                out = output.detach().flatten(2).float()  # (N, channels, positions)
                self._rows[i].append(_concatenated([out.mean(2), out.amax(2)]))
            return hook

        def linear_input(m, inputs):
            self._rows[0].append(inputs[0].detach().flatten(1).float().cpu().numpy().astype(np.float64))

        if self.layers:
            self._handles = [t.register_forward_hook(statistics(i)) for i, t in enumerate(self._targets)]
        else:
            self._handles = [self._targets[0].register_forward_pre_hook(linear_input)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def features(self, batch: Any) -> np.ndarray:
        """``(items, features)`` of the last pass over ``batch`` ``(N, C, ...)`` (array or tensor).
        Items whose input is all zero (slices outside the head) are left out unless all are."""
        x = batch.detach().cpu().numpy() if hasattr(batch, "detach") else np.asarray(batch)
        n = x.shape[0]
        parts = []
        for rows in self._rows:
            seen = np.concatenate(rows, 0) if rows else np.zeros((0, 0))
            if seen.shape[0] < n:
                raise ModelError("no forward pass over the whole input was seen by the feature capture")
            parts.append(seen[-n:])
        features = np.concatenate(parts, 1)
        content = np.abs(x.reshape(n, -1)).max(1) > 0
        return features[content] if content.any() else features


def _concatenated(parts: Sequence[Any]) -> np.ndarray:
    """``torch.cat(parts, 1)`` as a float64 numpy array."""
    import torch

    return torch.cat(list(parts), 1).cpu().numpy().astype(np.float64)


def network_features(module: Any, tensor: Any, layers: Sequence[str] = ()) -> np.ndarray:
    """``(items, features)`` of a prepared input ``(N, C, ...)``: the last Linear layer's input
    (``layers`` empty) or the per-channel mean and maximum of each named layer's output
    (:class:`FeatureCapture`), from one forward pass. Items whose input is all zero (slices
    outside the head) are left out unless all are."""
    import torch

    with FeatureCapture(module, layers) as capture:
        with torch.no_grad():
            module(tensor)
    return capture.features(tensor)


def median_distance(features: np.ndarray, location: np.ndarray, precision: np.ndarray) -> float:
    """Median Mahalanobis distance of the rows of ``features`` to ``location``."""
    centred = features - location
    per_item = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, precision, centred), 0.0))
    return float(np.median(per_item))


def _projection(train: np.ndarray, components: int) -> Dict[str, Any]:
    """The training features' mean and their first ``components`` principal axes (rows)."""
    mean = train.mean(0)
    _, _, axes = np.linalg.svd(train - mean, full_matrices=False)
    # seven significant digits, as the card stores them: the threshold is set with what is stored
    return {"mean": mean, "components": np.array([[float(f"{x:.7g}") for x in row] for row in axes[:components]])}


def _reduced(features: np.ndarray, projection: Dict[str, Any]) -> np.ndarray:
    """``(items, components + 1)``: the features' coordinates on the principal axes and their
    distance to the axes' span (what the axes miss: noise lies mostly there)."""
    centred = features - np.asarray(projection["mean"], np.float64)
    axes = np.asarray(projection["components"], np.float64)
    inside = centred @ axes.T
    off = np.linalg.norm(centred - inside @ axes, axis=1, keepdims=True)
    return np.concatenate([inside, off], axis=1)


def fit_reference(train: np.ndarray, validation: Sequence[np.ndarray], layers: Sequence[str] = (),
                  data: str = "", features: str = "") -> Dict[str, Any]:
    """A card's ``ood`` block from the training features ``(items, features)`` and each
    validation input's features: the mean and Ledoit-Wolf precision of the training items, the
    validation inputs' distances and the threshold (:data:`THRESHOLD_MARGIN` x their largest).

    Over :data:`MAX_DIRECT_FEATURES` features (a wide network's last layer: 512-4096), in a
    reduced space: the first :data:`REDUCED_COMPONENTS` principal axes of the training features
    and the distance to their span (``projection`` in the block). A precision matrix of all the
    features would put millions of numbers in the card, and a hundred training inputs cannot
    estimate it."""
    from sklearn.covariance import LedoitWolf

    if not validation:
        raise ValueError("a feature-space reference needs validation inputs to set its threshold")
    projection = None
    if train.shape[1] > MAX_DIRECT_FEATURES:
        projection = _projection(train, min(REDUCED_COMPONENTS, train.shape[0] - 1))
        train, validation = _reduced(train, projection), [_reduced(v, projection) for v in validation]
    fit = LedoitWolf().fit(train)
    location, precision = fit.location_, fit.precision_
    val = [median_distance(v, location, precision) for v in validation]
    reference = {
        "kind": "mahalanobis",
        "features": features or (layer_description(layers) if layers else LAST_LINEAR_FEATURES),
        "location": [float(x) for x in location],
        "precision": [[float(x) for x in row] for row in precision],
        "threshold": float(THRESHOLD_MARGIN * max(val)),
        "training": {"items": int(train.shape[0]), "data": data},
        "validation": {"inputs": len(val), "min": float(min(val)), "median": float(np.median(val)), "max": float(max(val))},
    }
    if layers:
        reference["layers"] = list(layers)
    if projection is not None:
        reference["projection"] = {"mean": [float(x) for x in projection["mean"]],
                                   "components": [[float(x) for x in row] for row in projection["components"]]}
    return reference


def card_reference(card: Any) -> Optional[Dict[str, Any]]:
    """The card's ``ood`` block (a card object or a card dict), ``None`` without one."""
    if card is None:
        return None
    reference = card.get("ood") if isinstance(card, dict) else (card.extra_get("ood") if hasattr(card, "extra_get") else None)
    return reference or None


def reference_layers(reference: Dict[str, Any]) -> List[str]:
    """The layers whose statistics a reference uses (empty: the last Linear layer's input)."""
    try:
        return [str(name) for name in reference.get("layers") or ()]
    except (AttributeError, TypeError) as exc:
        raise ModelError(f"the card's ood reference is malformed ({exc})") from None


def features_distance(features: np.ndarray, reference: Dict[str, Any]) -> float:
    """Distance of ``features`` ``(items, features)`` (:func:`network_features` or
    :meth:`FeatureCapture.features`) to a card's reference (median over the items)."""
    try:
        location = np.asarray(reference["location"], dtype=np.float64)
        precision = np.asarray(reference["precision"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"the card's ood reference is malformed ({exc})") from None
    if reference.get("projection"):
        try:
            features = _reduced(features, reference["projection"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the card's ood reference has a malformed projection ({exc})") from None
    if precision.shape != (location.size, location.size) or features.shape[1] != location.size:
        raise ModelError(f"the card's ood reference has {location.size} features, the network {features.shape[1]}")
    return median_distance(features, location, precision)


def reference_distance(module: Any, tensor: Any, reference: Dict[str, Any]) -> float:
    """Distance of a prepared input to a card's reference (median over its items)."""
    return features_distance(network_features(module, tensor.detach(), reference_layers(reference)), reference)


def unlike_training(module: Any, card: Any, tensor: Any) -> Optional[Dict[str, float]]:
    """``{"distance", "threshold", "min", "max"}`` when the prepared input lies beyond the card's
    ``ood`` threshold (``min`` / ``max``: its validation inputs' range), else ``None`` (also for
    a card without a reference or no network module)."""
    reference = card_reference(card)
    if not reference or module is None:
        return None
    return beyond_threshold(reference_distance(module, tensor, reference), reference)


def beyond_threshold(distance: float, reference: Dict[str, Any]) -> Optional[Dict[str, float]]:
    """:func:`unlike_training`'s answer for a ``distance`` already taken to ``reference``."""
    try:
        threshold = float(reference["threshold"])
        seen = reference.get("validation") or {}
        span = {k: float(seen[k]) for k in ("min", "max") if k in seen}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"the card's ood reference is malformed ({exc})") from None
    if distance <= threshold:
        return None
    return {"distance": distance, "threshold": threshold, **span}


def seen_span(found: Dict[str, float]) -> str:
    """``"2.5-4.8"``: the validation inputs' range of a :func:`unlike_training` result."""
    return f"{found['min']:.1f}-{found['max']:.1f}" if {"min", "max"} <= set(found) else "below it"
