"""Is this image like the ones the slice classifier was trained on? (:mod:`clinicalai.models.ood`)

The bundled lesion classifier gives a real, healthy T1 brain P(lesion) 0.997 on some slice; its
maps then mean little, and nothing said so. Its card's ``ood`` reference holds the training
slices' last-Linear-layer features (:mod:`clinicalai.models.ood`); an image's distance is the
median over its axial slices. :func:`feature_warning` turns a distance beyond the threshold into
one sentence for the user. What the bundled classifier's reference flags: docs/attribution.md.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from ..models.ood import fit_reference, network_features, seen_span, unlike_training


def volume_features(model: Any, volume: Any) -> Any:
    """``(slices with content, features)`` of ``volume`` prepared as :func:`~.core.attribute`
    prepares it."""
    from .preprocess import prepare_input

    prepared = prepare_input(volume, model.card, device="cpu")
    return network_features(model.module, prepared.tensor.cpu())


def feature_reference(model: Any, train_volumes: Sequence[Any], val_volumes: Sequence[Any], data: str = "") -> Dict[str, Any]:
    """The card's ``ood`` block from training and validation volumes (their slices' features)."""
    import numpy as np

    train = np.concatenate([volume_features(model, v) for v in train_volumes])
    return fit_reference(train, [volume_features(model, v) for v in val_volumes], data=data,
                         features="input of the network's last Linear layer (pooled features), one vector per axial slice")


def feature_warning(module: Any, card: Any, tensor: Any) -> Optional[str]:
    """One sentence when the prepared input lies beyond the card's ``ood`` threshold, else
    ``None`` (also for a card without a reference, or a network without gradients)."""
    found = unlike_training(module, card, tensor)
    if found is None:
        return None
    return (f"this image is unlike the images {card.name} was trained on (feature distance {found['distance']:.1f}; its "
            f"validation images {seen_span(found)}, warning above {found['threshold']:.1f}): its prediction and maps "
            "may mean little")
