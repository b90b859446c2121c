"""Training-step and evaluation cost with image batches in NCHW (torch's default) and channels-last (NHWC).

``helpers.placement.set_channels_last`` (the profiles' ``channels_last`` field) hands every batch to
the model in NHWC layout; weights stay as they are. This measures what that buys per network: one
SGD step (forward, backward, update; fp32, 23 classes, random data) and one evaluation forward of 128
images, each layout timed in turn round after round, so a machine shared with other jobs slows both
alike. Median seconds over the rounds (after one warm-up step each).

    python benchmarks/bench_channels_last.py [--threads 1] [--rounds 5] [--only efficientnet_lite0-160]
    python benchmarks/bench_channels_last.py --busy 1    # with another process keeping a core busy

The last line printed is JSON: {"results": [{case, model, image_size, batch, threads, busy,
nchw_step_s, nhwc_step_s, step_speedup, nchw_eval_s, nhwc_eval_s, eval_speedup}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import models  # noqa: E402
from helpers.runtime import sparse_measure  # noqa: E402

# case -> (registry name, image size, training batch): the profiles' sizes and batches
CASES = {
    "lenet5-32": ("lenet5", 32, 64),
    "alexnet-64": ("alexnet", 64, 128),
    "vgg16-32": ("vgg16", 32, 64),
    "resnet18-32": ("resnet18", 32, 64),
    "mobilenet_v3_small-64": ("mobilenet_v3_small", 64, 64),
    "efficientnet_lite0-128": ("efficientnet_lite0", 128, 32),
    "efficientnet_lite0-160": ("efficientnet_lite0", 160, 32),
}
EVAL_BATCH, NUM_CLASSES = 128, 23


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, image_size: int, batch: int, rounds: int) -> dict:
    """Median step and evaluation seconds in each layout, the layouts interleaved round by round."""
    torch.manual_seed(0)
    model = models.create(name, NUM_CLASSES, 3, image_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, targets = torch.randn(batch, 3, image_size, image_size), torch.randint(0, NUM_CLASSES, (batch,))
    eval_images = torch.randn(EVAL_BATCH, 3, image_size, image_size)
    layouts = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}

    def step(layout):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(images.contiguous(memory_format=layout)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def evaluate(layout):
        model.eval()
        model(eval_images.contiguous(memory_format=layout))

    times = {f"{key}_{what}": [] for key in layouts for what in ("step", "eval")}
    for layout in layouts.values():  # warm-up: oneDNN builds its kernels for each layout once
        step(layout), evaluate(layout)
    for _ in range(rounds):
        for key, layout in layouts.items():
            times[f"{key}_step"].append(_timed(lambda: step(layout)))
            times[f"{key}_eval"].append(_timed(lambda: evaluate(layout)))
    row = {f"{key}_s": statistics.median(values) for key, values in times.items()}
    row["step_speedup"] = row["nchw_step_s"] / row["nhwc_step_s"]
    row["eval_speedup"] = row["nchw_eval_s"] / row["nhwc_eval_s"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="these cases only")
    parser.add_argument("--busy", type=int, default=0, metavar="K", help="keep K other processes busy meanwhile")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.busy < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--rounds and --threads take positive counts, --busy 0 or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with sparse_measure.busy_processes(args.busy):
        for case in args.only or CASES:
            name, image_size, batch = CASES[case]
            row = {"case": case, "model": name, "image_size": image_size, "batch": batch,
                   "threads": torch.get_num_threads(), "busy": args.busy, **measure(name, image_size, batch, args.rounds)}
            print(f"{case:24s} step {row['nchw_step_s']:.3f} -> {row['nhwc_step_s']:.3f} s ({row['step_speedup']:.2f}x)"
                  f"   eval of {EVAL_BATCH} {row['nchw_eval_s']:.3f} -> {row['nhwc_eval_s']:.3f} s "
                  f"({row['eval_speedup']:.2f}x)", flush=True)
            results.append(row)
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
