"""Offline re-scoring of the evidence strategy's candidates on validation corruptions.

How the weights of :mod:`clinicalai.segcorrect.candidates` without probabilities were chosen
(issue #14, docs/segcorrect.md): every candidate of every invalid slice of the corrupted
phantoms of ``--seed`` .. ``--seed + --phantoms - 1`` (as ``clinicalai evaluate segcorrect``
makes them, with the image as evidence) is recorded once with its features (agreement with the
raw slice, image log-likelihood, Dice with the valid neighbours, the NVAE shape term, Dice with
the truth); then decision rules are replayed on the records without re-running the correction:
``score = agreement + w_image * image + w_neighbours * neighbours + w_shape * shape``, the near
tie (within ``eps`` of the best, the candidate closest to the raw mask) and the review rule.
Neighbours are those the real run saw. Use validation seeds only (1000-1039), never 3000-3019.
The shape term is recorded only while ``candidates.SHAPE_WEIGHT`` > 0 (the run skips the NVAE
pass at 0, the default since the local repairs; set it in candidates.py to record it again).

    python scripts/segcorrect_rescore.py --seed 1000 --phantoms 40 --records val.pkl
    python scripts/segcorrect_rescore.py --seed 1000 --phantoms 40 --corruptions all --records val-all.pkl
    python scripts/segcorrect_rescore.py --records val.pkl --list   # the degraded slices of the current rule
"""

from __future__ import annotations

import argparse
import itertools
import pickle
from pathlib import Path

import numpy as np


def collect(seed: int, n: int, drawn: tuple):
    """Records of every heart slice; invalid ones carry their candidates' features. ``drawn``:
    the corruption kinds drawn (as ``--corruptions`` of ``clinicalai evaluate segcorrect``)."""
    import torch

    import clinicalai.segcorrect.pipeline as pipeline
    from clinicalai.models import load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.corruptions import corrupt_volume
    from clinicalai.segcorrect.validity import label_dice

    torch.set_num_threads(1)
    values = [1, 2, 3]
    seen = []
    original = pipeline.candidates_for_slice

    def recording(raw, proposals, gate_values, evidence, extra=()):
        ranking = original(raw, proposals, gate_values, evidence, extra)
        seen.append((np.array(raw), evidence, ranking))
        return ranking

    pipeline.candidates_for_slice = recording  # observe the real run's candidates, change nothing
    corrector = load_model("cardiac-nvae", device="cpu")
    records = []
    for i in range(n):
        case = cardiac_case(seed + i, ("ED", "ES")[i % 2])
        noisy, kinds = corrupt_volume(case.labels.array, [seed, i, 7], drawn, probability=0.7)
        truth = case.labels.array.astype(np.int64)
        seen.clear()
        res = pipeline.correct_mask(case.labels.with_array(noisy.astype(np.uint8)), corrector, image=case.image,
                                    strategy="evidence")
        calls = iter(seen)
        for z, s in enumerate(res.slices):
            if not (truth[z].any() or noisy[z].any()):
                continue
            rec = {"case": i, "z": z, "kind": kinds[z], "raw_dice": label_dice(noisy[z], truth[z], values),
                   "final_dice": label_dice(res.final.array[z].astype(np.int64), truth[z], values),
                   "final_valid": s.valid_after if s.corrected else s.valid_before}
            if not s.valid_before:
                raw, ev, ranking = next(calls)
                rec["raw_features"] = _features(ev, raw, raw, truth[z], values)
                rec["cands"] = [dict(_features(ev, raw, c.labels, truth[z], values), valid=c.validity.valid,
                                     source=c.source) for c in ranking]
            records.append(rec)
        print(f"phantom {i + 1}/{n}", flush=True)
    pipeline.candidates_for_slice = original
    return records


def _features(ev, raw, labels, truth, values):
    from clinicalai.segcorrect.candidates import IMAGE_WEIGHT
    from clinicalai.segcorrect.validity import label_dice

    labels = labels.astype(np.int64)
    region = np.ones(labels.shape, bool)  # the image term is a sum: only differences between candidates count
    neighbours = [label_dice(labels, n, values) for n in ev.context.neighbours]
    ev_plain = type(ev)(ev.values, None, ev.raw, type(ev.context)(ev.context.image, ev.context.model))
    image = (ev_plain.support(labels, region) / IMAGE_WEIGHT) if ev_plain.has_image else 0.0
    return {"agreement": ev.agreement(labels), "image": image,
            "neighbours": float(np.mean(neighbours)) if neighbours else 0.0, "shape": ev.shape_score(labels),
            "truth": label_dice(labels, truth, values)}


def _support(f, w_image, w_nb, w_shape):
    """What the image, the neighbours and the shape add to a record's agreement."""
    return w_image * f["image"] + w_nb * f["neighbours"] + w_shape * f["shape"]


def _pick(r, w_image, w_nb, w_shape, eps, review):
    """The candidate record one rule applies to invalid slice ``r`` (``None``: raw kept, for
    review or without a valid candidate), and whether it went to review."""
    def support(f):
        return _support(f, w_image, w_nb, w_shape)

    pool = [c for c in r["cands"] if c["valid"]]
    if not pool:
        return None, False
    scores = [c["agreement"] + support(c) for c in pool]
    near = [c for c, s in zip(pool, scores) if s >= max(scores) - eps]
    pick = max(near, key=lambda c: c["agreement"])
    if pick["agreement"] < review and support(pick) <= support(r["raw_features"]):
        return None, True
    return pick, False


def replay(records, w_image, w_nb, w_shape, eps, review):
    """``(valid share, slices degraded > 0.02, mean slice Dice, kept for review)`` of one rule."""
    valid = sum(r["final_valid"] for r in records if "cands" not in r)
    dice = [r["final_dice"] for r in records if "cands" not in r]
    degraded = kept = 0
    for r in (r for r in records if "cands" in r):
        pick, review_it = _pick(r, w_image, w_nb, w_shape, eps, review)
        kept += review_it
        dice.append(r["raw_dice"] if pick is None else pick["truth"])
        valid += pick is not None
        degraded += pick is not None and pick["truth"] < r["raw_dice"] - 0.02
    return valid / len(records), degraded, float(np.mean(dice)), kept


def degraded_slices(records, rule):
    """Lines describing every slice ``rule`` degrades by more than 0.02: corruption kinds, raw
    Dice, the chosen candidate and the best valid one (Dice with the truth, agreement, score),
    and how many valid candidates stayed within 0.02 of the raw Dice (0: no candidate to choose,
    a generation problem; else a scoring one)."""
    def score(c):
        return c["agreement"] + _support(c, *rule[:3])

    lines = []
    for r in (r for r in records if "cands" in r):
        pick, _ = _pick(r, *rule)
        if pick is None or pick["truth"] >= r["raw_dice"] - 0.02:
            continue
        pool = [c for c in r["cands"] if c["valid"]]
        best = max(pool, key=lambda c: c["truth"])
        ok = sum(c["truth"] >= r["raw_dice"] - 0.02 for c in pool)
        lines.append(f"phantom {r['case']} z {r['z']} {'+'.join(r['kind'])}: raw {r['raw_dice']:.3f}; chosen "
                     f"{pick['source']!r} {pick['truth']:.3f} (agreement {pick['agreement']:.3f}, score {score(pick):.3f}); "
                     f"best valid {best['source']!r} {best['truth']:.3f} (agreement {best['agreement']:.3f}, score "
                     f"{score(best):.3f}); {ok} of {len(pool)} valid within 0.02 ({'scoring' if ok else 'generation'})")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--phantoms", type=int, default=40)
    ap.add_argument("--records", default="segcorrect-rescore.pkl", help="cache of the collected candidates")
    ap.add_argument("--corruptions", default="default", metavar="SET|KIND,...",
                    help="corruption kinds drawn, as on 'clinicalai evaluate segcorrect' (default|all|KIND,...)")
    ap.add_argument("--list", action="store_true", help="list the slices the current rule degrades, and why")
    args = ap.parse_args()
    if args.seed >= 3000:
        raise SystemExit("choose on validation seeds (1000-1039), not on the held-out 3000-3019")
    from clinicalai.errors import InputError
    from clinicalai.segcorrect.corruptions import corruption_kinds

    try:
        kinds = corruption_kinds(args.corruptions)
    except InputError as exc:
        raise SystemExit(str(exc)) from None
    path = Path(args.records)
    if path.is_file():  # a cache answers for the seeds and kinds it was recorded with
        records = pickle.loads(path.read_bytes())
    else:
        records = collect(args.seed, args.phantoms, kinds)
        path.write_bytes(pickle.dumps(records))
    if args.list:
        from clinicalai.segcorrect.candidates import IMAGE_WEIGHT, NEAR_TIE, NEIGHBOUR_WEIGHT, REVIEW_AGREEMENT, SHAPE_WEIGHT

        rule = (IMAGE_WEIGHT, NEIGHBOUR_WEIGHT, SHAPE_WEIGHT, NEAR_TIE, REVIEW_AGREEMENT)
        lines = degraded_slices(records, rule)
        v, d, m, k = replay(records, *rule)
        print("\n".join(lines))
        print(f"current rule {rule}: {100 * v:.1f} % valid, {d} of {len(records)} slices degraded, slice Dice {m:.4f}, "
              f"{k} for review")
        return
    rows = []
    for rule in itertools.product((0.5, 0.75), (0.25, 0.5, 1.0), (0.0, 0.1, 0.2, 0.4), (0.0, 0.01, 0.02),
                                  (0.8, 0.85, 0.9)):
        v, d, m, k = replay(records, *rule)
        rows.append((d, -v, rule, v, m, k))
    print("w_image w_neighbours w_shape near_tie review | valid  degraded  slice Dice  review")
    for d, _, rule, v, m, k in sorted(rows)[:20]:
        print(" ".join(f"{x:g}" for x in rule), f"| {100 * v:.1f} % {d:4d} {m:.4f} {k:4d}")


if __name__ == "__main__":
    main()
