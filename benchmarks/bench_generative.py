"""Speed and memory of the anomaly workflow per volume, as ratios to one forward pass.

    OMP_NUM_THREADS=1 python benchmarks/bench_generative.py [--size 32] [--repeat 3] [--mni]

For each generative kind (network built as the demo models are, untrained: speed does not
depend on the weights) it measures on one brain phantom (48x64x64 at 2 mm; ``--mni``: a
whole-head MNI-template phantom, 190 x 230 x 190 mm at 2 x 2 x 3 mm):

- ``forward_ms``: one forward pass ``module(x)`` on the model grid (the reference);
- ``network_ratio``: the scoring step (:func:`clinicalai.generative.nets.score_batch`:
  reconstruction, residual, critic / feature residual) / forward pass;
- ``anomaly_ratio``: the whole :func:`clinicalai.generative.anomaly` call (resampling to the
  model grid and back onto the input grid included) / forward pass;
- ``whole_ratio``: the same call with the card's ``field_of_view: whole`` (overlapping
  windows over the whole volume, :func:`clinicalai.generative.anomaly.score_whole`) / forward
  pass, and ``windows``: how many windows it reads;
- ``act_mem_ratio``: bytes of all module outputs produced by the scoring step / by one forward
  pass (activation memory, counted with forward hooks; weights excluded);
- ``act_MB``: that activation memory of the scoring step for one volume, in MiB (it does not
  depend on the machine);
- ``params``: parameter count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def _activation_bytes(module: torch.nn.Module, fn) -> int:
    total = [0]

    def hook(_m, _inp, out):
        outs = out if isinstance(out, (list, tuple)) else [out]
        for o in outs:
            if isinstance(o, torch.Tensor):
                total[0] += o.numel() * o.element_size()

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        with torch.no_grad():
            fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    from clinicalai.generative.anomaly import SLIDING_OVERLAP, _window_count, anomaly
    from clinicalai.generative.data import GridSpec, to_model_grid
    from clinicalai.generative.nets import KINDS, build, score_batch
    from clinicalai.models import LoadedModel, parse_card
    from clinicalai.phantoms.brain import brain_case

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32, help="model grid edge (voxels, 3 mm)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--mni", action="store_true", help="a whole-head MNI-template phantom instead")
    args = p.parse_args(argv)
    spec = GridSpec((3.0, 3.0, 3.0), (args.size,) * 3)
    whole = GridSpec((3.0, 3.0, 3.0), (args.size,) * 3, field_of_view="whole")
    if args.mni:
        from clinicalai.phantoms.mni import mni_brain_case

        image = mni_brain_case(5, pathological=True, contrast="FLAIR", spacing=(2.0, 2.0, 3.0)).image
    else:
        image = brain_case(5, pathological=True).image
    windows = _window_count(to_model_grid(image, whole).tensor.shape[1:], whole.shape_zyx, SLIDING_OVERLAP)
    x = torch.from_numpy(to_model_grid(image, spec).tensor[None])
    rows = []
    for kind in KINDS:
        channels = (8, 16) if kind == "cyclegan" else (8, 16, 32)
        module, name, kwargs = build(kind, spec, 64, channels, (2, 2, 2))
        module.eval()
        card = {"name": f"bench-{kind}", "task": "anomaly-detection", "format": "state_dict",
                "architecture": {"name": name, "kwargs": kwargs}, "input": spec.card_input(), "generative_kind": kind}
        loaded, loaded_whole = (LoadedModel(card=parse_card({**card, **extra}), backend="torch", path=Path("."),
                                            device="cpu", module=module)
                                for extra in ({}, whole.card_extra()))
        fwd = _best(lambda: module(x), args.repeat)
        net = _best(lambda: score_batch(module, kind, x, False), args.repeat)
        full = _best(lambda: anomaly(image, loaded), args.repeat)
        full_whole = _best(lambda: anomaly(image, loaded_whole), args.repeat)
        mem_f = _activation_bytes(module, lambda: module(x))
        mem_s = _activation_bytes(module, lambda: score_batch(module, kind, x, False))
        rows.append((kind, fwd * 1e3, net / fwd, full / fwd, full_whole / fwd, mem_s / max(mem_f, 1),
                     mem_s / 2 ** 20, sum(p.numel() for p in module.parameters())))
    print(f"threads={torch.get_num_threads()} grid={args.size}^3 input={image.shape} whole-field windows={windows}")
    print(f"{'kind':<10} {'forward_ms':>10} {'network_ratio':>13} {'anomaly_ratio':>13} {'whole_ratio':>11} "
          f"{'act_mem_ratio':>13} {'act_MB':>7} {'params':>9}")
    for kind, f, n, a, w, m, mb, prm in rows:
        print(f"{kind:<10} {f:10.1f} {n:13.2f} {a:13.2f} {w:11.2f} {m:13.2f} {mb:7.2f} {prm:9d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
