"""The classes of the PetRecurrence task: the one definition the engine, its model cards and
the PET phantoms (:mod:`clinicalai.phantoms.pet`) share.

No import beyond the standard library: the phantoms import this module, never the reverse.
"""

from __future__ import annotations

from typing import Dict, List

#: class names in the order of the networks' outputs (index 1, the single logit's class, is recurrence)
CLASSES: List[str] = ["treatment-related change", "recurrence"]
#: the class a probability is given for: P(recurrence)
POSITIVE_CLASS = CLASSES[1]
#: label (0 / 1, as in a training CSV) -> class name
LABELS: Dict[int, str] = dict(enumerate(CLASSES))
