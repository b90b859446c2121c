"""Data-parallel training throughput: AlexNet at 64 px on 1 process vs 2 (torch threads split).

Each round trains one epoch of the same synthetic data with ``training.fit(world_size=1)`` (all of
this machine's threads in one process) and with ``world_size=2`` (half the threads each, gloo),
alternating so that load from other users of a shared machine hits both alike. ``samples_per_s``
comes from the epochs' own training time (no validation); ``launch_s`` is the rest of a 2-process
``fit`` call (forkserver start, payload of the model written and read, process group, DDP); the
very first call also starts the forkserver (``first_fit_s``). The global batch is the ``cpu``
profile's 128 in both cases (64 per process). The last line is JSON.

    python benchmarks/bench_ddp.py
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from torch.utils.data import TensorDataset

from helpers import data, distributed, models, training

NUM_CLASSES, IMAGE_SIZE, BATCH, STEPS_PER_EPOCH, ROUNDS = 23, 64, 128, 3, 3


def one_epoch(world_size: int, dataset) -> tuple[float, float]:
    """(wall seconds of the fit call, seconds of its training epoch)."""
    torch.manual_seed(0)
    model = models.create("alexnet", NUM_CLASSES, 3, IMAGE_SIZE)
    loader = data.loader(dataset, BATCH, shuffle=True)
    start = time.perf_counter()
    history = training.fit(model, loader, None, 1, "cpu", lr=0.01, progress=False, log=lambda m: None,
                           world_size=world_size)
    return time.perf_counter() - start, history[0]["time_s"]


def main():
    n = BATCH * STEPS_PER_EPOCH
    g = torch.Generator().manual_seed(0)
    dataset = TensorDataset(torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g),
                            torch.randint(0, NUM_CLASSES, (n,), generator=g))
    threads = torch.get_num_threads()
    print(f"threads={threads} per process with 2: {distributed.threads_per_process(2)}; "
          f"{n} samples a epoch, global batch {BATCH}")
    first_fit_s, _ = one_epoch(2, dataset)  # starts the forkserver
    rates = {1: [], 2: []}
    launch = []
    for r in range(ROUNDS):
        for world in (1, 2):
            wall, epoch = one_epoch(world, dataset)
            rates[world].append(n / epoch)
            if world == 2:
                launch.append(wall - epoch)
            print(f"round {r} world_size={world}: epoch {epoch:.2f} s ({n / epoch:.1f} samples/s), fit {wall:.2f} s")
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(json.dumps({"model": "alexnet", "image_size": IMAGE_SIZE, "global_batch": BATCH, "threads": threads,
                      "samples_per_s_1proc": round(one, 2), "samples_per_s_2proc": round(two, 2),
                      "speedup": round(two / one, 3), "launch_s": round(statistics.median(launch), 2),
                      "first_fit_s": round(first_fit_s, 2)}))


if __name__ == "__main__":
    main()
