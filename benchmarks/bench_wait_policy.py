"""Training steps on several torch threads while other processes hold cores: OpenMP's default waiting
against ``OMP_WAIT_POLICY=PASSIVE``.

torch's intra-op threads are an OpenMP team. Between parallel regions the default policy keeps the
waiting threads spinning for a while; when another process holds a core, a spinning thread takes
turns with the one that has work, and a step can take several times as long (docs/benchmarks.md).
``PASSIVE`` puts waiting threads to sleep at once. OpenMP reads the variable when it starts, so each
policy runs in its own child process, the two alternating round after round (a machine shared with
other jobs slows both alike). Each child times ``--steps`` SGD steps (fp32, 23 classes, random data,
after one warm-up step) and hashes the weights it ends with: the policy changes when threads wait,
not what they compute, so the hashes must agree.

    python benchmarks/bench_wait_policy.py --threads 2 --busy 1     # beside one busy process
    python benchmarks/bench_wait_policy.py --threads 2 --busy 0     # idle

The last line printed is JSON: {"results": [{case, threads, busy, default_step_s, passive_step_s,
speedup, same_weights}, ...]}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {  # case -> (registry name, image size, training batch): the profiles' sizes and batches
    "lenet5-32": ("lenet5", 32, 64),
    "alexnet-64": ("alexnet", 64, 128),
    "efficientnet_lite0-160": ("efficientnet_lite0", 160, 32),
}
POLICIES = {"default": None, "passive": "PASSIVE"}
NUM_CLASSES = 23


def child(case: str, threads: int, steps: int) -> dict:
    """Time ``steps`` training steps of ``case`` in this process; the per-step seconds and a weights hash."""
    import torch

    from helpers import models

    torch.set_num_threads(threads)
    name, image_size, batch = CASES[case]
    torch.manual_seed(0)
    model = models.create(name, NUM_CLASSES, 3, image_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, targets = torch.randn(batch, 3, image_size, image_size), torch.randint(0, NUM_CLASSES, (batch,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: kernels chosen, memory allocated
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values()))
    return {"step_s": statistics.median(seconds), "weights": digest.hexdigest()[:16]}


def run_child(case: str, policy: str, threads: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if POLICIES[policy] is not None:
        env["OMP_WAIT_POLICY"] = POLICIES[policy]
    done = subprocess.run([sys.executable, __file__, "--child", case, "--threads", str(threads), "--steps", str(steps)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(case: str, threads: int, steps: int, rounds: int) -> dict:
    """Median step seconds under each policy, the policies alternating round by round."""
    runs = {policy: [] for policy in POLICIES}
    for _ in range(rounds):
        for policy in POLICIES:
            runs[policy].append(run_child(case, policy, threads, steps))
    row = {f"{policy}_step_s": statistics.median(r["step_s"] for r in results) for policy, results in runs.items()}
    row["speedup"] = row["default_step_s"] / row["passive_step_s"]
    row["same_weights"] = len({r["weights"] for results in runs.values() for r in results}) == 1
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each child (default 2)")
    parser.add_argument("--busy", type=int, default=1, metavar="K", help="keep K other processes busy meanwhile")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per child")
    parser.add_argument("--rounds", type=int, default=3, help="children per policy, alternating")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="these cases only")
    parser.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.threads, args.steps, args.rounds) < 1 or args.busy < 0:
        parser.error("--threads, --steps and --rounds take positive counts, --busy 0 or more")
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.steps)))
        return 0
    from helpers.runtime import sparse_measure

    results = []
    with sparse_measure.busy_processes(args.busy):
        for case in args.only or CASES:
            row = {"case": case, "threads": args.threads, "busy": args.busy,
                   **measure(case, args.threads, args.steps, args.rounds)}
            print(f"{case:24s} {args.threads} threads, {args.busy} busy: step {row['default_step_s']:.3f} s (default) "
                  f"-> {row['passive_step_s']:.3f} s (PASSIVE), {row['speedup']:.2f}x; same weights: "
                  f"{row['same_weights']}", flush=True)
            results.append(row)
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
