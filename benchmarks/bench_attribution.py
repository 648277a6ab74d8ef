"""Time and peak memory of every attribution method on a 3D ResNet10, as multiples of one
forward pass measured in the same run (issue #5, "Parity and speed").

    python benchmarks/bench_attribution.py            # 128x128x82 volume (the PET size), CPU: a few minutes
    python benchmarks/bench_attribution.py --small    # 64x64x41, about a minute
    python benchmarks/bench_attribution.py --device cuda

Memory: on CUDA the peak allocated by torch (``max_memory_allocated``) above the model and
input; on the CPU the peak resident set size above the level before the call, sampled every
5 ms by a thread (so short spikes can be missed). Sample counts are kept small so the run stays
short; the cost grows linearly with them (``--steps``).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory above the level at entry (bytes)."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0

    def __enter__(self):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _rss()
            self._stop = threading.Event()
            self._max = self.base

            def sample():
                while not self._stop.is_set():
                    self._max = max(self._max, _rss())
                    time.sleep(0.005)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, _rss()) - self.base
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="64x64x41 instead of 128x128x82")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=8, help="IG steps, EG / SmoothGrad samples")
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    import torch
    from monai.networks.nets import resnet10

    from clinicalai.attribution import METHODS, attribute_tensor
    from clinicalai.attribution.methods import auto_batch_size

    if args.threads:
        torch.set_num_threads(args.threads)
    size_xyz = (64, 64, 41) if args.small else (128, 128, 82)
    shape = (1, 1) + tuple(reversed(size_xyz))  # (N, C, z, y, x)
    torch.manual_seed(0)
    net = resnet10(spatial_dims=3, n_input_channels=1, num_classes=2).eval().to(args.device)
    x = torch.rand(shape, device=args.device)
    refs = torch.rand((4,) + shape[1:], device=args.device)
    # warm-up: one forward and one backward (first calls pay for kernel selection)
    attribute_tensor(net, x, "gradient", target=1)
    times = []
    for _ in range(3):  # the reference: median of three forward passes
        with PeakMemory(args.device) as mem, torch.no_grad():
            t = time.perf_counter()
            net(x)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    fwd_s = sorted(times)[1]
    fwd_mem = max(mem.peak, 1)
    batch = auto_batch_size(net, x)
    occl_patch = [max(1, s // 4) for s in shape[2:]]
    options = {
        "integrated-gradients": {"n_steps": args.steps},
        "expected-gradients": {"references": refs, "n_samples": args.steps},
        "smoothgrad": {"nt_samples": args.steps},
        "occlusion": {"patch": occl_patch},  # 4 x 4 x 4 = 64 patches
    }
    print(f"3D ResNet10, input {size_xyz[0]}x{size_xyz[1]}x{size_xyz[2]} on {args.device} "
          f"(torch threads {torch.get_num_threads()}), auto internal batch {batch}")
    print(f"one forward pass: {fwd_s:.3f} s, {fwd_mem / 2**20:.0f} MiB")
    print()
    print("| method | evaluations | seconds | x forward (time) | peak MiB | x forward (memory) |")
    print("|---|---|---|---|---|---|")
    evals = {"integrated-gradients": args.steps, "expected-gradients": args.steps, "smoothgrad": args.steps,
             "occlusion": 64 + 1}
    for name in args.methods or list(METHODS):
        with PeakMemory(args.device) as mem:
            t = time.perf_counter()
            out = attribute_tensor(net, x, name, target=1, **options.get(name, {}))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            s = time.perf_counter() - t
        assert torch.isfinite(out).all()
        n_eval = evals.get(name, 1)
        print(f"| {name} | {n_eval} | {s:.2f} | {s / fwd_s:.1f} | {mem.peak / 2**20:.0f} | {mem.peak / fwd_mem:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
