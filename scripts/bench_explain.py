"""Seconds and peak memory of each explanation method per slide, and training time per epoch.

Bags of random features (``--sizes`` tiles x 1024 features, the width of UNI-class encoders)
through untrained ``gated_abmil``, ``transformer_mil`` and ``transmil`` (the cost of an
explanation does not depend on the weights), every method each model supports (``lrp``,
``perturbation``, ``keep_one`` and ``chefer_cvpr2021`` included). Each (model, size, method)
is timed once after a warm-up on a small bag, and its ratio to ``attention`` on the same bag
(one forward pass, the baseline measured in the same run) is printed beside it; peak memory is
the largest resident-set growth seen by a sampling thread during the call (torch's CPU
allocations included, which tracemalloc does not see). Methods whose cost is quadratic in the
bag (rollout, the Chefer rules and attention x gradient on transformers) are refused above
``--max-quadratic-tiles``, and ``perturbation`` on transformers (one forward pass per tile left
out) above ``--max-perturbation-tiles``, and reported as such; a (model, size, method)
predicted to take longer than ``--budget`` seconds (from the previous size, scaled linearly
for attention models, TransMIL and keep_one, quadratically for transformer_mil, one power more
for perturbation on transformers; the first size of perturbation on a transformer, from one
``attention`` pass times the tiles) is skipped and reported as such. Then ``transmil`` vs
``gated_abmil`` training seconds per epoch on the same bags (``--train-bags 0``: none).

    .venv/bin/python scripts/bench_explain.py [--sizes 1000 10000 100000] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import warnings
from typing import Self

import numpy as np

MODELS = ("gated_abmil", "transformer_mil", "transmil")
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """Largest RSS growth (bytes) while the block runs, sampled every 2 ms; on CUDA, the
    allocator's peak instead."""

    def __init__(self, device: str) -> None:
        self.device, self.peak = device, 0

    def __enter__(self) -> Self:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base, self.running = rss(), True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
            return
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss() - self.base)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--max-quadratic-tiles", type=int, default=12000)
    parser.add_argument("--max-perturbation-tiles", type=int, default=1000)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument(
        "--methods",
        nargs="+",
        help="only these (default: every method the "
        "model supports; attention always runs, as the baseline)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=120.0,
        help="skip a (model, size, method) predicted to exceed this (s)",
    )
    parser.add_argument("--train-bags", type=int, default=10)
    parser.add_argument("--train-tiles", type=int, default=2000)
    args = parser.parse_args()
    import torch

    from wsi_mil.explain.methods import ExplainError, available_methods, explain
    from wsi_mil.mil.bags import BagDataset
    from wsi_mil.mil.models import create_model
    from wsi_mil.mil.params import TrainParams
    from wsi_mil.mil.train import make_optimizer, run_epoch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import captum.attr  # noqa: F401 - imported before timing (the first lrp call would pay it)

    device = torch.device(args.device)
    print(
        f"device {device}, {torch.get_num_threads()} threads, {args.dim} features, "
        f"integrated_gradients with {args.ig_steps} steps"
    )
    print("| model | tiles | method | seconds | x attention | peak memory (MB) |")
    print("|---|---|---|---|---|---|")
    total = time.perf_counter()
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, args.dim, 2).to(device).eval()
        previous: dict[str, tuple[float, int]] = {}  # method -> (seconds, tiles) last measured
        explain(model, np.random.default_rng(0).standard_normal((64, args.dim)), "attention")
        for n in args.sizes:
            bag = torch.from_numpy(
                np.random.default_rng(n).standard_normal((n, args.dim), dtype=np.float32)
            ).to(device)
            baseline = None
            for method in available_methods(model):
                if args.methods and method not in (*args.methods, "attention"):
                    continue
                # exact attention is quadratic in the bag; a pass per tile left out adds a
                # factor n; one-tile bags (keep_one) are linear
                power = (
                    1
                    if method == "keep_one"
                    else (
                        (name == "transformer_mil") + (method == "perturbation") + 1
                        if name != "gated_abmil"
                        else 1
                    )
                )
                predicted = None
                if method in previous:
                    predicted = previous[method][0] * (n / previous[method][1]) ** power
                elif baseline is not None and method == "perturbation" and name != "gated_abmil":
                    predicted = baseline * n  # one forward pass per tile left out
                if predicted is not None and predicted > args.budget:
                    print(
                        f"| {name} | {n} | {method} | skipped: predicted {predicted:.0f} s "
                        f"> budget | | |",
                        flush=True,
                    )
                    previous[method] = (predicted, n)  # the next size is predicted from this
                    continue
                try:
                    with PeakMemory(args.device) as memory:
                        start = time.perf_counter()
                        explain(
                            model,
                            bag,
                            method,
                            target=1,
                            ig_steps=args.ig_steps,
                            max_quadratic_tiles=args.max_quadratic_tiles,
                            max_perturbation_tiles=args.max_perturbation_tiles,
                        )
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        seconds = time.perf_counter() - start
                except ExplainError as exc:
                    print(
                        f"| {name} | {n} | {method} | refused: {str(exc).split(';')[1].strip()} "
                        "| | |",
                        flush=True,
                    )
                    continue
                previous[method] = (seconds, n)
                baseline = seconds if method == "attention" else baseline
                ratio = f"{seconds / baseline:.1f}" if baseline else ""
                print(
                    f"| {name} | {n} | {method} | {seconds:.2f} | {ratio} | "
                    f"{memory.peak / 2**20:.0f} |",
                    flush=True,
                )
    print(f"\nexplanations: {time.perf_counter() - total:.0f} s in all")
    if args.train_bags < 1:
        return 0
    print(
        f"\ntraining, {args.train_bags} bags x {args.train_tiles} tiles x {args.dim} "
        "features, batch size 1"
    )
    rng = np.random.default_rng(0)
    bags = [
        rng.standard_normal((args.train_tiles, args.dim), dtype=np.float32)
        for _ in range(args.train_bags)
    ]
    data = BagDataset.from_arrays(bags, [i % 2 for i in range(args.train_bags)])
    print("| model | seconds per epoch |")
    print("|---|---|")
    for name in ("gated_abmil", "transmil"):
        params = TrainParams(model=name, device=args.device, seg_weight=0.5)
        torch.manual_seed(0)
        model = create_model(name, args.dim, 2, **params.model_kwargs()).to(device)
        optimizer = make_optimizer(model.parameters(), params)
        run_epoch(model, data, params, 0, device, None, optimizer)  # warm-up
        start = time.perf_counter()
        run_epoch(model, data, params, 0, device, None, optimizer)
        print(f"| {name} | {time.perf_counter() - start:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
