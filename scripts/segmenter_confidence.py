"""Median per-slice confidence of a 2D segmenter on images it was and was not made for: the
figures behind a card's ``input.min_median_confidence`` (the bundled ``cardiac-unet``'s 0.885).

Prints one row per case: the cardiac training family (seeds 5000+, not its training seeds), the
held-out cardiac family (``clinicalai.phantoms.cardiac_heldout``) and two brain families (the
brain phantoms and the MNI-template ones), all synthetic. A limit belongs between the lowest
cardiac row and the highest brain row.

Run: ``.venv/bin/python scripts/segmenter_confidence.py [--model Resources/Models/cardiac-unet.json] [--n 3]``
(about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from clinicalai.models import load_model
    from clinicalai.phantoms.brain import brain_case
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.phantoms.cardiac_heldout import heldout_cardiac_case
    from clinicalai.phantoms.mni import mni_brain_case
    from clinicalai.segcorrect.segmenter import segment_volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Resources/Models/cardiac-unet.json")
    parser.add_argument("--n", type=int, default=3, help="cases per family")
    args = parser.parse_args()
    model = load_model(args.model)
    families = [
        ("cardiac training family", lambda s: cardiac_case(5000 + s).image),
        ("cardiac held-out family", lambda s: heldout_cardiac_case(s).image),
        ("brain phantoms", lambda s: brain_case(s).image),
        ("MNI-template brain", lambda s: mni_brain_case(s).image),
    ]
    limit = model.card.input.min_median_confidence
    print(f"{model.card.name}: card limit {limit}")
    print("| family | seed | median slice confidence | lowest slice |")
    print("| --- | --- | --- | --- |")
    for name, make in families:
        for seed in range(args.n):
            conf = np.asarray(segment_volume(make(seed), model).slice_confidence)
            print(f"| {name} | {seed} | {np.median(conf):.3f} | {conf.min():.3f} |")


if __name__ == "__main__":
    main()
