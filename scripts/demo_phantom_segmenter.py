"""The ``segment`` step of ``clinicalai demo`` (the cardiac phantom seed 4242, ED) with any
segmenter, with and without the largest-component step: the demo-phantom row of the table
in docs/segmentation.md.

Prints one row per setting: Dice over RV / MYO / LV (raw and after the bundled gated
correction) and valid slices before and after correction, as the demo reports them.

Run: ``.venv/bin/python scripts/demo_phantom_segmenter.py [--model Resources/Models/cardiac-unet.json] [--corrector C.pt]``
(a few seconds per row on 2 CPU cores).
"""

from __future__ import annotations

import argparse


def main() -> None:
    from clinicalai.models import bundled_model, load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect import DEFAULT_CORRECTOR
    from clinicalai.segcorrect.demo import DEMO_SEED, segment_step

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Resources/Models/cardiac-unet.json")
    parser.add_argument("--corrector", default=None, help="corrector file (default: the bundled one)")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    corrector = load_model(args.corrector or bundled_model(DEFAULT_CORRECTOR), device="cpu")
    case = cardiac_case(DEMO_SEED, "ED")
    print(f"{model.card.name} ({args.model}) on the demo phantom (seed {DEMO_SEED}, ED), corrector {corrector.card.name}")
    print("| largest component per structure | Dice raw | Dice after correction | valid before | valid after |")
    print("| --- | --- | --- | --- | --- |")
    for keep in (False, True):
        _, s = segment_step(case, model, corrector, keep_largest=keep)
        n = int(case.labels.array.shape[0])
        print(f"| {'on' if keep else 'off'} | {s['dice_raw']:.3f} | {s['dice_final']:.3f} | "
              f"{s['valid_raw']} of {n} | {s['valid_final']} of {n} |")


if __name__ == "__main__":
    main()
