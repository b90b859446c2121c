"""Side by side with NNCodec (the MPEG NNC reference, DeepCABAC) on pruned + quantized LeNets.

The weights: LeNet-300-100 and LeNet-5 trained briefly on Fashion-MNIST (``make``: 3 dense
epochs (LeNet-5: 2), magnitude pruning to the paper's Table 1/2 densities (LeNet-300-100: fc1 8 %, fc2 9 %,
fc3 26 %; LeNet-5: conv1 66 %, conv2 12 %, fc1 8 %, fc2 19 %), 2 retraining epochs with the masks
(LeNet-5: 1), k-means quantization (8 bits conv, 5 bits fc) and 1 epoch of codebook fine-tuning;
SGD with momentum, learning rate 0.05 (LeNet-5: 0.01), /5 when pruned, /50 when quantized), saved as
``.dcz`` files under ``runs/nncodec/`` and reused. Test accuracy is printed but is not the point:
both coders code exactly the same integer weights.

Both ways:
* ours: the bytes of every layer's coded weights as ``helpers.coding.fileformat`` writes them today (the
  stored file is coded again): the layer context-coded whole (``helpers.coding.cabac``), or its two
  streams (codebook indices and positions: coded data, code or frequency tables, sync tables);
  and, as "streams", what the two streams alone take (format version 4's coding);
* NNCodec: every layer's weight as NNCodec's codebook mode represents it (its
  ``approximator.codebook``: the distinct values, 0.0 for the pruned ones among them, as a
  codebook, each weight as its index minus a zero offset), coded with DeepCABAC
  (``nncodec.extensions.deepCABAC.Encoder.encodeLayer``) at the settings that give the fewest bytes
  (every zero offset, as NNCodec itself searches them; CABAC unary length 10 or 11; parameter
  optimisation on or off): the most favourable reading of NNCodec. Its codebook is not counted,
  as ours is not. Every bitstream is decoded again and compared.

NNCodec needs numpy < 2, this project numpy >= 2, so it lives in its own virtual environment
(``.venv*`` is git-ignored) that shares this interpreter's torch:

    python -m venv --system-site-packages .venv-nncodec
    .venv-nncodec/bin/pip install "numpy<2" nncodec==2.1.3

Then, from the repository root (``--data-dir``: the four raw Fashion-MNIST idx files, e.g. from
``apt-get install dataset-fashion-mnist``)::

    python benchmarks/bench_nncodec.py make --data-dir /usr/share/datasets/fashion-mnist
    python benchmarks/bench_nncodec.py [--venv .venv-nncodec]
    python benchmarks/bench_nncodec.py small   # float16 codebooks, biases, header, in bytes

The second command exports each file's weights (``.npz``), runs this script's ``nncodec``
subcommand in the venv on them and prints the table; the last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

OUT_DIR = os.path.join("runs", "nncodec")
LR = {"lenet300": 0.05, "lenet5": 0.01}  # LeNet-5 diverges (10 % accuracy) at 0.05
EPOCHS = {"lenet300": (3, 2, 1), "lenet5": (2, 1, 1)}  # dense, pruned, quantized
DENSITY = {"lenet300": {"fc1": 0.08, "fc2": 0.09, "fc3": 0.26},
           "lenet5": {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}}


# ----------------------------------------------------------------------------- the weights (numpy >= 2 side)
def make(name: str, data_dir: str, seed: int = 0) -> str:
    """Train, prune, quantize and save one LeNet (see the module docstring); returns the file path."""
    import torch
    from torch import nn

    from helpers import data, models
    from helpers.coding import fileformat
    from helpers.prune import pruning
    from helpers.quantize import quantization

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # two threads on a shared 2-core machine make LeNet steps many times slower
    xtr, ytr, xte, yte = data.mnist_arrays("fashion-mnist", data_dir, download=False)
    prep = lambda x: ((torch.from_numpy(x.copy()).float() / 255 - 0.2860) / 0.3530).unsqueeze(1)  # noqa: E731
    xtr, xte, ytr, yte = prep(xtr), prep(xte), torch.from_numpy(ytr).long(), torch.from_numpy(yte).long()
    model = models.create(name, 10, 1, 28)
    found = models.compressible_layers(model)
    names = dict(zip(DENSITY[name], found))  # paper layer name -> module name

    def epochs(n, lr):
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
        for _ in range(n):
            model.train()
            for i in torch.randperm(len(xtr)).split(128):
                opt.zero_grad()
                nn.functional.cross_entropy(model(xtr[i]), ytr[i]).backward()
                pruning.masked_gradients(model)
                opt.step()
        model.eval()
        with torch.no_grad():
            return float((model(xte).argmax(1) == yte).float().mean())

    (dense, pruned, quantized), lr = EPOCHS[name], LR[name]
    acc = [epochs(dense, lr)]
    pruning.prune_to_sparsity(model, {names[k]: 1 - d for k, d in DENSITY[name].items()})
    acc.append(epochs(pruned, lr / 5))
    pruning.remove_masks(model)
    quantization.quantize_model(model, conv_bits=8, fc_bits=5)
    acc.append(epochs(quantized, lr / 50))
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"{name}.dcz")
    fileformat.save_model(model, path, {"test_accuracy": acc})
    print(f"{name}: test accuracy dense {acc[0]:.4f}, pruned {acc[1]:.4f}, quantized {acc[2]:.4f} -> {path}")
    return path


def export(path: str, out: str) -> dict:
    """Per layer of a ``.dcz`` file: its dequantized weight (float32, +0.0 where pruned) into an
    ``.npz`` for NNCodec; returns our coded bytes per layer (the layer context-coded, or its index
    and position streams) as this code writes the same weights today (the file may be older)."""
    from helpers.coding import fileformat

    with open(path, "rb") as f:
        stored = fileformat.parse(f.read())
    layers = {name: s.to_quantized() for name, s in stored.layers.items()}
    args = stored.header["create_args"], layers, stored.tensors, stored.header["metadata"]
    parsed = fileformat.parse(fileformat.encode_file(*args))
    streams = fileformat.parse(fileformat.encode_file(*args, coders=("huffman", "rans")))  # version 4's
    streams_bytes = {d["name"]: fileformat.layer_coded_bytes(d) for d in streams.header["layers"]}
    np.savez(out, **{name: s.dense().numpy() for name, s in parsed.layers.items()})
    return {d["name"]: {"ours_bytes": fileformat.layer_coded_bytes(d), "streams_bytes": streams_bytes[d["name"]],
                        "coders": ["cabac"] if "cabac" in d else [d["index"].get("coder", "huffman"),
                                                                  d["gap"].get("coder", "huffman")],
                        "survivors": d["survivors"]} for d in parsed.header["layers"]}


def small_things(path: str, data_dir: str) -> dict:
    """What a small model pays for, in bytes of one file: float32 vs float16 codebooks (and the
    test accuracy of each, since float16 rounds the weights unless exact), biases (stored raw,
    float32), the header (everything outside the data region)."""
    import torch

    from helpers import data
    from helpers.coding import fileformat

    contents = fileformat.read_compressed(path)
    xte, yte = data.mnist_arrays("fashion-mnist", data_dir, download=False)[2:]
    x = ((torch.from_numpy(xte.copy()).float() / 255 - 0.2860) / 0.3530).unsqueeze(1)
    sizes, accuracy = {}, {}
    for dtype in ("float32", "float16"):
        blob = fileformat.encode_file(contents.create_args, contents.layers, contents.other_tensors,
                                      contents.metadata, codebook_dtype=dtype)
        sizes[dtype] = len(blob)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = os.path.join(tmp, "m.dcz")
            with open(tmp_path, "wb") as f:
                f.write(blob)
            model = fileformat.load_compressed(tmp_path).eval()
        with torch.no_grad():
            accuracy[dtype] = float((model(x).argmax(1) == torch.from_numpy(yte).long()).float().mean())
    report = fileformat.size_report(path)[-1]
    bias_bytes = sum(t.numel() * t.element_size() for t in contents.other_tensors.values())
    return {"file_bytes": report["file_bytes"], "header_bytes": report["header_bytes"],
            "raw_tensor_bytes": bias_bytes, "codebook_entries": sum(q.codebook.numel() for q in contents.layers.values()),
            "float16_codebooks_save_bytes": sizes["float32"] - sizes["float16"],
            "test_accuracy_float32_codebooks": accuracy["float32"],
            "test_accuracy_float16_codebooks": accuracy["float16"]}


# ----------------------------------------------------------------------------- NNCodec (numpy < 2 side)
def nncodec_bytes(npz: str) -> dict:
    """DeepCABAC bytes per layer, coded as NNCodec's codebook mode codes it (its
    ``approximator.codebook``: the distinct values, 0.0 among them, as a codebook; the integer
    index minus a zero offset picked by trying every offset), at the settings that give the
    fewest bytes (unary length 10 or 11 bins, parameter optimisation on or off): the most
    favourable reading of NNCodec. Every bitstream is decoded again and checked."""
    from nncodec.extensions import deepCABAC
    from nncodec.nnc_core.hdsp.hdsp_tool import HDSP_OPTS_OFF

    out = {}
    for name, w in np.load(npz).items():
        codebook, idx = np.unique(w, return_inverse=True)
        idx = idx.reshape(w.shape[0], -1).astype(np.int32)
        best = None
        for offset in range(len(codebook)):
            levels = np.ascontiguousarray(idx - offset, dtype=np.int32)
            for unary in (10, 11):
                for opt in (0, 1):
                    enc = deepCABAC.Encoder()
                    enc.initCtxModels(unary, opt)
                    enc.encodeLayer(levels, 0, 0, 0, 0, 0, np.zeros(levels.shape[0], dtype=np.int32),
                                    *HDSP_OPTS_OFF(), 0, 0)
                    data = bytearray(enc.finish().tobytes())
                    if best is None or len(data) < best[0]:
                        best = (len(data), offset, unary, opt, data, levels)
        size, offset, unary, opt, data, levels = best
        dec = deepCABAC.Decoder()
        dec.setStream(data)
        dec.initCtxModels(unary)
        got = np.zeros(levels.shape, dtype=np.int32)
        dec.decodeLayer(got, 0, 0, 0, 0, *HDSP_OPTS_OFF(), 0, 0)
        dec.finish()
        out[name] = {"nncodec_bytes": size, "zero_offset": offset, "unary_length": unary,
                     "param_opt": opt, "round_trip": bool(np.array_equal(got, levels))}
    return out


# ----------------------------------------------------------------------------- the table
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs="?", default="compare", choices=("compare", "make", "nncodec", "small"))
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--venv", default=".venv-nncodec")
    ap.add_argument("--npz", help="nncodec: the exported weights")
    ap.add_argument("--models", nargs="+", default=list(DENSITY), choices=list(DENSITY))
    args = ap.parse_args(argv)
    if args.command == "nncodec":  # inside the venv: print NNCodec's sizes as JSON
        print(json.dumps(nncodec_bytes(args.npz)))
        return
    if args.command == "make":
        for name in DENSITY:
            make(name, args.data_dir)
        return
    if args.command == "small":
        for name in DENSITY:
            print(name, json.dumps(small_things(os.path.join(OUT_DIR, f"{name}.dcz"), args.data_dir)))
        return
    python = os.path.join(args.venv, "bin", "python")
    if not os.path.exists(python):
        sys.exit(f"no NNCodec virtual environment at {args.venv}: create it as the module docstring says")
    rows, result = [], {}
    for name in args.models:
        path = os.path.join(OUT_DIR, f"{name}.dcz")
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run `python benchmarks/bench_nncodec.py make` first")
        with tempfile.TemporaryDirectory() as tmp:
            npz = os.path.join(tmp, "w.npz")
            ours = export(path, npz)
            run = subprocess.run([python, __file__, "nncodec", "--npz", npz], capture_output=True, text=True)
            if run.returncode:
                sys.exit(f"NNCodec failed:\n{run.stderr[-3000:]}")
            theirs = json.loads(run.stdout.strip().splitlines()[-1])
        for layer, o in ours.items():
            rows.append((name, layer, o["survivors"], o["streams_bytes"], o["ours_bytes"],
                         theirs[layer]["nncodec_bytes"], "/".join(o["coders"]), theirs[layer]["round_trip"]))
        total = {key: sum(o[key] for o in ours.values()) for key in ("ours_bytes", "streams_bytes")}
        total_nnc = sum(t["nncodec_bytes"] for t in theirs.values())
        rows.append((name, "all", sum(o["survivors"] for o in ours.values()), total["streams_bytes"],
                     total["ours_bytes"], total_nnc, "", True))
        result[name] = {**total, "nncodec_bytes": total_nnc,
                        "ours_over_nncodec": round(total["ours_bytes"] / total_nnc, 4),
                        "streams_over_nncodec": round(total["streams_bytes"] / total_nnc, 4), "layers": {
                            layer: {**ours[layer], **theirs[layer]} for layer in ours}}
    print(f"{'model':>9} {'layer':>14} {'survivors':>9} {'streams B':>9} {'ours B':>8} {'NNCodec B':>9} "
          f"{'ours/NNC':>8}  coders")
    for model, layer, n, st, o, t, coders, ok in rows:
        print(f"{model:>9} {layer:>14} {n:>9,} {st:>9,} {o:>8,} {t:>9,} {o / t:8.3f}  {coders}"
              f"{'' if ok else ' (NNC ROUND TRIP FAILED)'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
