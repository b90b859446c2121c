"""Benchmark of the sparse runtime (``helpers.runtime.sparse``) against the dense fp32 and int8 loads.

For AlexNet at 64 px and 224 px and VGG16 at 32 px (23 classes), files with random weights at the
paper's per-layer densities (Table 4, Table 5; ``helpers.runtime.sparse_measure.PAPER_DENSITY``), quantized
8 bits conv / 5 bits fc, are loaded three ways: dense fp32 (``load_compressed(quantized=False)``),
int8 of that dense model (``helpers.quantize.int8.int8_model``, the original project's approach) and the
sparse runtime (``load_compressed(runtime="sparse")``). In one run, the three timed in turn round
after round (so a shared machine slows them alike): median ms per forward at batch 1 and 32, for
the whole network (part "all") and for its Linear layers alone on their recorded inputs (part
"fc", the paper's Fig. 9 measure); *_best_ms is the fastest round (what an idle machine gives).
Weight bytes are resident bytes (parameters, buffers, survivors); *_load_rss is the RSS a fresh
process gains by loading the file (after importing torch, torchvision, helpers and compiling the
sparse kernel; freed heap returned with malloc_trim first, for both).

On a machine shared with other jobs, every multi-threaded op (each conv, pool, GEMM, and the
sparse kernel) waits for its second thread to be scheduled: measured here, a 64 x 15 x 15 max-pool
took 5 ms and AlexNet's 64 px convolutions ~130 ms instead of a few; ``--threads 1`` avoids those
waits and shows the single-core cost of each form.

    python benchmarks/bench_runtime.py [--rounds 15] [--threads N] [--only alexnet-64]
    python benchmarks/bench_runtime.py --file runs/sea-cpu/alexnet/alexnet.dcz   # a file of yours
    python benchmarks/bench_runtime.py --calibrate     # break-even densities (helpers.runtime.sparse.BREAK_EVEN)
    python benchmarks/bench_runtime.py --int8-backends  # torch.ao vs torchao int8 Linear (helpers.quantize.int8)
    python benchmarks/bench_runtime.py --busy 1 --only alexnet-64   # with another process on a core

A fourth form, where onnxruntime, onnx and onnxscript are installed (``--no-ort`` leaves it out):
the dense fp32 export run by onnxruntime with the same thread count, whole network only (``ort_ms``),
what a user would deploy instead. ``--busy K`` keeps K processes spinning for the whole run.

The last line printed is JSON: {"results": [{model, part, image_size, batch, dense_ms, int8_ms,
sparse_ms, ort_ms, busy, dense_weight_bytes, sparse_weight_bytes, dense_load_rss, sparse_load_rss,
...}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from helpers.runtime import sparse_measure  # noqa: E402

# name -> (registry model, input size, density of every prunable layer; None: the paper's per layer)
CASES = {"alexnet-64": ("alexnet", 64, None), "alexnet-224": ("alexnet", 224, None), "vgg16-32": ("vgg16", 32, None),
         "resnet18-224": ("resnet18", 224, 0.1), "mobilenet_v3_small-224": ("mobilenet_v3_small", 224, 0.3)}


def run_cases(names, rounds, folder, files=(), ort=False):
    """Rows for the random-weight cases ``names`` (written to ``folder``) and for existing ``files``."""
    results = []
    for key in [*names, *files]:
        if key in CASES:
            name, size, density = CASES[key]
            path = os.path.join(folder, f"{key}.dcz")
            t0 = time.perf_counter()
            sparse_measure.random_compressed_file(path, name, size, density)
            print(f"{key}: file {os.path.getsize(path) / 1e6:.2f} MB in {time.perf_counter() - t0:.0f} s", flush=True)
        else:
            path = key
            print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB", flush=True)
        for row in sparse_measure.compare(path, batches=(1, 32), rounds=rounds, ort=ort):
            if key in CASES and CASES[key][2] is not None:
                row["density"] = CASES[key][2]
            results.append(row)
            onnx = f"  onnxruntime {row['ort_ms']:8.2f}" if row.get("ort_ms") is not None else ""
            print(f"  {row['part']:>3} batch {row['batch']:>2}: dense {row['dense_ms']:8.2f}  int8 "
                  f"{row['int8_ms']:8.2f}  sparse {row['sparse_ms']:8.2f}{onnx} ms (median; best "
                  f"{row['dense_best_ms']:.2f} / {row['int8_best_ms']:.2f} / {row['sparse_best_ms']:.2f})",
                  flush=True)
        r = results[-1]
        print(f"  weights {r['dense_weight_bytes'] / 1e6:.1f} -> {r['sparse_weight_bytes'] / 1e6:.1f} MB; "
              f"load RSS {r['dense_load_rss'] / 1e6:.1f} -> {r['sparse_load_rss'] / 1e6:.1f} MB; "
              f"sparse layers {r['sparse_layers']}, indexed {r['indexed_layers']}", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: torch's)")
    parser.add_argument("--only", nargs="+", choices=list(CASES), default=None,
                        help="random-weight cases to run (default: all, or none with --file)")
    parser.add_argument("--file", nargs="+", default=[], help="compressed files of yours to measure")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--int8-backends", action="store_true")
    parser.add_argument("--busy", type=int, default=0, metavar="K",
                        help="keep K other processes busy on the cores for the whole run (a loaded machine)")
    parser.add_argument("--no-ort", action="store_true", help="leave out onnxruntime on the dense export")
    args = parser.parse_args(argv)
    if args.busy < 0:
        parser.error("--busy takes a count of processes, 0 or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    ort = not args.no_ort and sparse_measure.onnxruntime_available()
    if not args.no_ort and not ort:
        print("onnxruntime, onnx or onnxscript is not installed: no onnxruntime column", flush=True)
    with sparse_measure.busy_processes(args.busy):
        out = measure(args, parser, ort)
    print(json.dumps(out))


def measure(args, parser, ort) -> dict:
    info = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "busy": args.busy,
            "load_avg_start": os.getloadavg()[0]}
    if args.calibrate:
        out = sparse_measure.calibrate()
    elif args.int8_backends:
        out = sparse_measure.int8_backends()
    else:
        missing = [f for f in args.file if not os.path.isfile(f)]
        if missing:
            parser.error(f"no such file: {', '.join(missing)}")
        names = args.only if args.only is not None else ([] if args.file else list(CASES))
        with tempfile.TemporaryDirectory() as folder:
            out = {"results": [{**row, "busy": args.busy} for row in run_cases(names, args.rounds, folder,
                                                                               args.file, ort)]}
    out.update(info, load_avg_end=os.getloadavg()[0])
    return out


if __name__ == "__main__":
    main()
