"""What the phantom families and their command share: the metadata of a one-segment mask,
the folder layouts of a brain data set. Light (no numpy / scipy): ``clinicalai synth``'s parser
reads it."""

from __future__ import annotations

from typing import Any, Dict, Tuple

#: folder layouts :func:`clinicalai.phantoms.brain.write_brain_dataset` can write
BRAIN_LAYOUTS = ("flat", "brats")


def segment_metadata(name: str, color: Tuple[float, float, float]) -> Dict[str, Any]:
    """``Volume.metadata`` of a mask with one segment (label value 1) called ``name``;
    ``color`` RGB in 0..1. A new dict each call: volumes never share metadata."""
    return {"segments": [{"name": name, "value": 1, "color": color}]}
