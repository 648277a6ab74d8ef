"""What every phantom family shares: the metadata of a one-segment mask."""

from __future__ import annotations

from typing import Any, Dict, Tuple


def segment_metadata(name: str, color: Tuple[float, float, float]) -> Dict[str, Any]:
    """``Volume.metadata`` of a mask with one segment (label value 1) called ``name``;
    ``color`` RGB in 0..1. A new dict each call: volumes never share metadata."""
    return {"segments": [{"name": name, "value": 1, "color": color}]}
