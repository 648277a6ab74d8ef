"""PetRecurrence cost per scan: preprocessing, one forward, the fold ensemble, Grad-CAM, peak memory.

    .venv/bin/python benchmarks/bench_pet.py [--device cpu|cuda] [--arch cnn3d] [--full] [--folds 3] [--repeats 3]

Times are medians over ``--repeats``; every figure is also given as a multiple of one forward
pass of one fold model in the same process (the reference), and Grad-CAM as a multiple of one
forward + backward (what it should cost). ``--full`` uses the study's input (2 mm,
128 x 128 x 82) and untrained networks of ``--arch``; the default uses the bundled demo fold
models (8 mm, 32 x 32 x 21). Peak memory: CUDA max allocated on a GPU, the process' peak RSS
growth (ru_maxrss) on the CPU.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from typing import Callable, List


def _median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    times: List[float] = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    import torch

    from clinicalai.models import load_model, save_model
    from clinicalai.networks import build_network
    from clinicalai.networks.pet_cnns import PET_CAM_LAYERS, pet_architecture
    from clinicalai.pet.classes import CLASSES
    from clinicalai.pet.preprocess import FULL_SIZE_XYZ, FULL_SPACING_MM, describe_input, preprocess_from_card
    from clinicalai.pet.workflow import _fold_probabilities, bundled_pet_models, gradcam_tensor, predict_pet
    from clinicalai.phantoms.pet import pet_case

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="cnn3d")
    ap.add_argument("--full", action="store_true", help="the study's 128x128x82 input with untrained --arch models")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    dev = args.device
    cuda = dev.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    if args.full:
        import tempfile
        from pathlib import Path

        tmp = Path(tempfile.mkdtemp(prefix="bench-pet-"))
        name, kwargs = pet_architecture(args.arch)
        paths = []
        for f in range(args.folds):
            torch.manual_seed(f)
            card = {"name": f"bench-{args.arch}-fold{f}", "task": "classification",
                    "architecture": {"name": name, "kwargs": kwargs},
                    "input": describe_input(FULL_SPACING_MM, FULL_SIZE_XYZ),
                    "classes": CLASSES, "cam_layer": PET_CAM_LAYERS[args.arch]}
            paths.append(save_model(build_network(name, kwargs), card, tmp / f"bench-{args.arch}-fold{f}.pt"))
    else:
        paths = bundled_pet_models()[: args.folds]
    models = [load_model(p, device=dev) for p in paths]
    case = pet_case(4242, recurrence=True, scanner="A")
    pet = case.image
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    pre = _median_time(lambda: preprocess_from_card(pet, models[0].card), args.repeats, sync)
    pp = preprocess_from_card(pet, models[0].card)
    x = torch.from_numpy(pp.input[None]).to(dev)
    m0 = models[0].module
    with torch.inference_mode():
        m0(x)  # warm-up
    def forward():
        with torch.inference_mode():
            m0(x)
    fwd = _median_time(forward, args.repeats, sync)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        m0.zero_grad()
        m0(xi)[:, 0].sum().backward()
    fb = _median_time(fwd_bwd, args.repeats, sync)
    layer = models[0].card.cam_layer
    cam1 = _median_time(lambda: gradcam_tensor(m0, x, layer), args.repeats, sync)
    ens = _median_time(lambda: predict_pet(pet, models, brain_mask=case.brain_mask), args.repeats, sync)
    ens_cam = _median_time(lambda: predict_pet(pet, models, brain_mask=case.brain_mask, cam=True), args.repeats, sync)
    # the folds' feature-distance check (cards with an ood reference; part of predict_pet): the
    # fold passes with the feature capture against the same passes without it
    with_check = _median_time(lambda: _fold_probabilities(models, [pp] * len(models), None, None), args.repeats, sync)
    without_check = _median_time(lambda: [m.predict(pp.input[None]) for m in models], args.repeats, sync)
    ood = with_check - without_check
    peak = (torch.cuda.max_memory_allocated() / 2**20) if cuda else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024

    size = "x".join(str(s) for s in pp.input.shape[1:])
    print(f"PetRecurrence benchmark: {len(models)} fold models ({models[0].card.name.rsplit('-fold', 1)[0]}), "
          f"input {size} at {models[0].card.input.spacing_mm} mm, device {dev}, torch threads {torch.get_num_threads()}")
    print(f"{'step':44s} {'seconds':>10s} {'x forward':>10s}")
    rows = [
        ("preprocessing (SUV, 2 mm/8 mm, mask, crop, min-max)", pre),
        ("one forward (one fold model)", fwd),
        ("one forward + backward", fb),
        ("Grad-CAM, one fold model (network space)", cam1),
        (f"predict_pet, {len(models)}-fold ensemble, no CAM", ens),
        (f"predict_pet, {len(models)}-fold ensemble + Grad-CAM", ens_cam),
        ("  Grad-CAM share per scan (difference)", ens_cam - ens),
        ("  unlike-training check per scan (in both)", ood),
    ]
    for label, sec in rows:
        print(f"{label:44s} {sec:10.4f} {sec / fwd:10.1f}")
    print(f"Grad-CAM per fold model = {cam1 / fb:.2f} x (forward + backward)")
    print(f"peak memory: {peak:.0f} MiB ({'CUDA max allocated' if cuda else 'RSS growth'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
