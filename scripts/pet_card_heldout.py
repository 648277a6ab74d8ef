"""Store the PET fold ensemble's held-out figures in the bundled fold cards (issue 19).

Reads the JSON that ``scripts/heldout_figures.py --pet-only`` prints (the MNI-template held-out
family) and writes its summary into the ``heldout`` entry of every card of the fold models
(default the bundled ``Resources/Models/pet-cnn3d-fold*.json``). The weights, and so each
card's sha256, are not touched. Usage::

    python scripts/heldout_figures.py --pet-only --n 16 --seed 0 > /tmp/pet_heldout.json
    python scripts/pet_card_heldout.py /tmp/pet_heldout.json --n 16 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

#: the figures a card keeps (the reliability tables stay in docs/heldout.md)
KEYS = ("n", "n_pos", "n_neg", "auc", "neg_mean", "neg_below_half", "cam_within", "cam_inside", "cam_median_mm",
        "per_kind")


def summary(figures: Dict[str, Any], command: str) -> Dict[str, Any]:
    """The card's ``heldout`` entry: the figures of :data:`KEYS` (rounded to 3 places), the
    Brier score when the calibration ran, what the cases were and the command."""
    def rnd(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 3)
        return {k: rnd(x) for k, x in v.items()} if isinstance(v, dict) else v

    out = {k: rnd(figures[k]) for k in KEYS if k in figures}
    brier = (figures.get("calibration") or {}).get("bundled", {}).get("brier")
    if brier is not None:
        out["brier"] = brier
    out["family"] = ("clinicalai.phantoms.mni FDOPA PET phantoms, held-out stream (never trained on); "
                     "alternately not recurrence / recurrence")
    out["cam_tolerance_mm"] = 10.0
    out["command"] = command
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("figures", type=Path, help="JSON printed by scripts/heldout_figures.py --pet-only")
    ap.add_argument("--n", type=int, required=True, help="the --n the figures were made with")
    ap.add_argument("--seed", type=int, required=True, help="the --seed the figures were made with")
    ap.add_argument("--models", type=Path, default=None, help="folder of the fold cards (default: bundled models)")
    args = ap.parse_args(argv)
    from clinicalai.models import BUNDLED_MODELS_DIR
    from clinicalai.models.card import store_heldout

    folder = args.models or BUNDLED_MODELS_DIR
    cards = sorted(folder.glob("pet-cnn3d-fold*.json"))
    if not cards:
        ap.error(f"no pet-cnn3d-fold*.json in {folder}")
    try:
        figures = json.loads(args.figures.read_text())
    except (OSError, ValueError) as exc:
        ap.error(f"cannot read the figures JSON {args.figures}: {exc}")
    if figures.get("n") != args.n or "auc" not in figures:
        ap.error(f"{args.figures} is not a --pet-only output with --n {args.n}")
    entry = summary(figures, f"python scripts/heldout_figures.py --pet-only --n {args.n} --seed {args.seed}")
    for path in cards:
        store_heldout(path, entry)
        print(f"held-out figures written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
