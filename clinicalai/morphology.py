"""Binary morphology that SciPy has, made faster where the correction calls it thousands of times.

:func:`binary_fill_holes` gives exactly SciPy's result (Testing/foundation/test_morphology.py
compares them on random masks, 1-3 D, both connectivities). SciPy fills holes by growing the
outside through the background one binary dilation at a time until nothing changes: as many
passes as the widest background region is deep, which made hole filling the largest cost of
SegCorrect's candidate generation (about a third of the evidence strategy's time on cardiac
phantoms, thousands of calls per volume). One connected-component labelling of the background
finds the same outside in a single pass.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage


def binary_fill_holes(mask: np.ndarray, structure: Optional[np.ndarray] = None) -> np.ndarray:
    """``mask`` with every background region that does not reach the array's edge set.

    Args:
        mask: boolean (or 0/1) array of any dimension.
        structure: connectivity of the *background*, as in ``scipy.ndimage.binary_fill_holes``
            (default: faces only, i.e. 4-connected in 2D, 6-connected in 3D).

    Returns:
        boolean array of ``mask``'s shape: ``scipy.ndimage.binary_fill_holes(mask, structure)``.
    """
    mask = np.asarray(mask, dtype=bool)
    filled = mask.copy()
    where = np.nonzero(mask)
    if not where[0].size:
        return filled
    # Holes lie inside the mask's bounding box; everything around the box is one background
    # region reaching the faces, so the box grown by one pixel decides (the heart of a cardiac
    # phantom's 256 x 256 slice: about 4 % of the pixels).
    box = tuple(slice(max(int(w.min()) - 1, 0), int(w.max()) + 2) for w in where)
    background, n = ndimage.label(~mask[box], structure=structure)
    outside = np.zeros(n + 1, dtype=bool)
    for axis in range(mask.ndim):  # a background region touching any face of the box is outside
        outside[np.take(background, 0, axis=axis)] = True
        outside[np.take(background, -1, axis=axis)] = True
    filled[box] |= ~outside[background]
    return filled
