"""Benchmark of the compressed file format on VGG16 (23 classes) at the paper's Table 5 densities.

Random weights are pruned by magnitude to each layer's density and quantized with a linear
codebook (8 bits conv, 5 bits fc): ~6.2M survivors, ~16M stream symbols. Times are the
best of ``--repeat`` runs (the machine may be shared; *_cpu_s is this process's CPU time):

* encode = entropy coding (per stream Huffman or rANS, whichever is smaller: ``helpers.coding.streams``;
  per layer of at most ``cabac.MAX_POSITIONS`` weights, the two streams or ``helpers.coding.cabac``'s
  context-adaptive code of the whole layer, whichever is smaller)
  + writing the file (``save_compressed`` from plain QuantizedLayers);
* decode = reading + decoding + rebuilding the nn.Module through the default load path,
  ``load_compressed(path)``: the trainable codebooks installed from the file's survivors by
  ``helpers.quantize.quantization.import_quantized`` (the model as ``quantize_model`` leaves it);
  decode_dense = the same with plain dense weights (``load_compressed(quantized=False)``).

The last line printed is JSON: encode_s, decode_s, file_bytes, entropy_bytes (order-0 bound of
all streams), file_over_entropy = file_bytes / (entropy_bytes + bytes stored raw: header,
codebooks, biases, framing), plus details; per stream kind (index, gap): the coded bytes (tables
included), the order-0 bound, how many streams each coder won (kind "cabac": the layers coded
whole, against their two streams' order-0 bound); huffman_file_bytes: the same
file with Huffman only (format version 2's coding), and gain_over_huffman_pct.

    python benchmarks/bench_fileformat.py [--repeat 3] [--out /tmp/vgg16.dcz]
    python benchmarks/bench_fileformat.py --file runs/sea-cpu/alexnet/alexnet.dcz   # a file of yours

``--file`` times an existing file instead: parse (read + decode every layer, the part of a load
that depends on the coding), encode again (``encode_file`` of what it holds: the same bytes,
checked) and the whole ``load_compressed``; the last line is JSON with parse_s, encode_s, load_s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from helpers.coding import fileformat, streams
from helpers import models  # noqa: E402
from helpers.quantize.quantization import QuantizedLayer  # noqa: E402

# Paper Table 5 (VGG16): weights kept per layer.
DENSITY = [0.58, 0.22, 0.34, 0.36, 0.53, 0.24, 0.42, 0.32, 0.27, 0.34, 0.35, 0.29, 0.36, 0.01, 0.02, 0.09]


def build(seed=0):
    torch.manual_seed(seed)
    model = models.create("vgg16", 23, 3, 32)
    layers = {}
    with torch.no_grad():
        for (name, module), density in zip(models.compressible_layers(model).items(), DENSITY, strict=True):
            w = module.weight
            keep = max(1, round(density * w.numel()))
            flat = w.abs().reshape(-1)
            thr = torch.topk(flat, keep, sorted=False).values.min()
            mask = w.abs() >= thr
            bits = 8 if w.ndim == 4 else 5
            survivors = w[mask]
            codebook = torch.linspace(float(survivors.min()), float(survivors.max()), 2 ** bits)
            mid = (codebook[1:] + codebook[:-1]) / 2
            indices = torch.zeros(w.shape, dtype=torch.int64)
            indices[mask] = torch.bucketize(survivors, mid)
            layers[name] = q = QuantizedLayer(codebook.float(), indices, mask, bits)
            module.weight.copy_(q.weight())
    others = {k: v for k, v in model.state_dict().items()
              if k.removesuffix(".weight") not in layers}
    return model, layers, others


def per_stream_kind(parsed) -> dict:
    """Coded bytes (tables included), order-0 entropy bound and coder counts per stream kind."""
    from helpers.coding import huffman

    def bound(d, pos):
        symbols = parsed.symbols(d["name"])[pos]
        return huffman.entropy_bits(np.bincount(symbols)) / 8 if symbols.size else 0

    out = {}
    for pos, kind in enumerate(("index", "gap")):
        coded = entropy = 0.0
        coders = {}
        for d in parsed.header["layers"]:
            if "cabac" in d:
                continue
            entry = d[kind]
            coded += streams.stream_bytes(entry)
            entropy += bound(d, pos)
            coders[entry.get("coder", "huffman")] = coders.get(entry.get("coder", "huffman"), 0) + 1
        out[kind] = {"coded_bytes": int(coded), "entropy_bytes": round(entropy),
                     "coded_over_entropy": round(coded / max(entropy, 1), 4), "coders": coders}
    context = [d for d in parsed.header["layers"] if "cabac" in d]  # both streams' bound, coded as one
    coded, entropy = sum(map(fileformat.layer_coded_bytes, context)), sum(bound(d, 0) + bound(d, 1) for d in context)
    out["cabac"] = {"coded_bytes": coded, "entropy_bytes": round(entropy),
                    "coded_over_entropy": round(coded / max(entropy, 1), 4), "coders": {"cabac": len(context)}}
    return out


def time_file(path, repeat: int) -> dict:
    """Best-of-``repeat`` seconds to parse, encode again and load an existing file."""
    with open(path, "rb") as f:
        data = f.read()
    contents = fileformat.read_compressed(path)
    times = {"parse_s": [], "encode_s": [], "load_s": []}
    for _ in range(repeat):
        t = time.perf_counter()
        fileformat.parse(data)
        times["parse_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        again = fileformat.encode_file(contents.create_args, contents.layers, contents.other_tensors,
                                       contents.metadata)
        times["encode_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fileformat.load_compressed(path)
        times["load_s"].append(time.perf_counter() - t)
    return {"file": str(path), "file_bytes": len(data), "same_bytes": again == data, "threads": torch.get_num_threads(),
            **{k: round(min(v), 3) for k, v in times.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--file", default=None, help="time this .dcz file instead of the VGG16 benchmark's")
    args = ap.parse_args(argv)
    if args.file:
        print(json.dumps(time_file(args.file, args.repeat)))
        return
    t0 = time.perf_counter()
    model, layers, others = build()
    survivors = sum(int(q.mask.sum()) for q in layers.values())
    print(f"built VGG16-23 with {survivors:,} survivors in {time.perf_counter() - t0:.1f} s", flush=True)
    tmpdir = tempfile.mkdtemp()
    path = args.out or os.path.join(tmpdir, "vgg16.dcz")
    enc, cpu = [], {"enc": [], "dec": [], "dense": []}
    dec, dense = [], []
    metadata = {"class_names": [str(i) for i in range(23)], "image_size": 32}
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        fileformat.save_compressed(path, model.create_args, layers, others, metadata)
        enc.append(time.perf_counter() - t)
        cpu["enc"].append(time.process_time() - c)
    for _ in range(args.repeat):  # alternate the two paths: both see the same machine load
        for times, key, quantized in ((dec, "dec", True), (dense, "dense", False)):
            t, c = time.perf_counter(), time.process_time()
            loaded = fileformat.load_compressed(path, quantized=quantized)
            times.append(time.perf_counter() - t)
            cpu[key].append(time.process_time() - c)
            del loaded
    print(f"encode s: {[round(x, 3) for x in enc]}  decode s: {[round(x, 3) for x in dec]} "
          f"(cpu {[round(x, 3) for x in cpu['dec']]})  decode dense s: {[round(x, 3) for x in dense]} "
          f"(cpu {[round(x, 3) for x in cpu['dense']]})")
    loaded = fileformat.load_compressed(path)
    found = models.compressible_layers(loaded)
    with torch.no_grad():  # equal values, and +0.0 (all bits zero) wherever pruned
        exact = all(torch.equal(found[n].weight, q.weight())
                    and not found[n].weight[~q.mask].view(torch.int32).any() for n, q in layers.items())
    exact &= all(torch.equal(loaded.state_dict()[k], v) for k, v in others.items())
    x = torch.randn(2, 3, 32, 32)
    model.eval(), loaded.eval()
    with torch.no_grad():
        same_out = torch.equal(model(x), loaded(x))
    report = fileformat.size_report(path)
    total = report[-1]
    for r in report:
        print(f"{r['layer']:>14} {r['weights']:>11,} kept {r['kept_pct']:5.1f}%  weight bits "
              f"{r['weight_bits_pq'] or '':>2}/{r['weight_bits_pqh']:5.2f}  index bits "
              f"{r['index_bits_pq'] or '':>2}/{r['index_bits_pqh']:5.2f}  compress "
              f"{r['compress_pq_pct']:6.2f}%/{r['compress_pqh_pct']:6.2f}%")
    file_bytes = os.path.getsize(path)
    with open(path, "rb") as f:  # bytes outside the coded streams (which include their tables)
        parsed = fileformat.parse(f.read())
    header = parsed.header
    raw = file_bytes - sum(map(fileformat.layer_coded_bytes, header["layers"]))
    kinds = per_stream_kind(parsed)
    huffman_bytes = len(fileformat.encode_file(model.create_args, layers, others, metadata, coders=("huffman",)))
    for kind, k in kinds.items():
        print(f"{kind:>6} streams: {k['coded_bytes']:,} B coded, order-0 bound {k['entropy_bytes']:,} B "
              f"({k['coded_over_entropy']:.4f}x), coders {k['coders']}")
    result = {
        "encode_s": round(min(enc), 3), "decode_s": round(min(dec), 3),
        "decode_dense_s": round(min(dense), 3),
        "encode_cpu_s": round(min(cpu["enc"]), 3), "decode_cpu_s": round(min(cpu["dec"]), 3),
        "decode_dense_cpu_s": round(min(cpu["dense"]), 3),
        "file_bytes": file_bytes, "entropy_bytes": round(total["entropy_bytes"]),
        "raw_bytes": raw,
        "file_over_entropy": round(file_bytes / (total["entropy_bytes"] + raw), 4),
        "streams_over_entropy": round((file_bytes - raw) / total["entropy_bytes"], 4),
        "compression_ratio": round(total["compression_ratio"], 1), "survivors": survivors,
        "bit_exact": bool(exact), "same_outputs": bool(same_out),
        "streams": kinds, "huffman_file_bytes": huffman_bytes,
        "gain_over_huffman_pct": round(100 * (1 - file_bytes / huffman_bytes), 2),
    }
    if args.out is None:
        os.unlink(path)
        os.rmdir(tmpdir)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
