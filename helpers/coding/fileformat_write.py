"""Writing ``.dcz`` files (the format: ``helpers.coding.fileformat``), and their size report in the
paper's Table 2-5 form.
"""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np
import torch

from . import cabac, huffman, rans
from . import streams as coding
from .fileformat_layout import (CODEBOOK_DTYPES, CODERS, DTYPES, MAGIC, MAX_HEADER_BYTES, TRAILER,
                                VALUES_PROBLEM, VERSION, CompressedFileError, SparseLayer, default_gap_bits,
                                gap_encode, values_ok)
from .fileformat_read import _check_metadata, _read, parse


def check_metadata(metadata, in_channels=None) -> dict:
    """``metadata`` as the file will hold it (a JSON object), or ValueError naming the key and the fix
    when JSON cannot hold it or the reader would refuse it (``fileformat_read._check_metadata``):
    the writer and ``helpers.compress`` check it before any work, so no unreadable file is written."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise ValueError(f"metadata must be a dict with string keys, got {type(metadata).__name__}")
    for key, value in metadata.items():  # one key at a time, so that the message names it
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"metadata[{key!r}] cannot be stored ({exc}): use str, int, finite float, bool, "
                             "list and dict values (a tensor: .tolist())") from None
    stored = json.loads(json.dumps(metadata))  # as the reader sees it: tuples are lists
    try:
        _check_metadata(stored, in_channels)
    except CompressedFileError as exc:
        raise ValueError(f"{exc}; the file's reader would refuse it, so fix metadata= first") from None
    return stored

# float16 storage of a codebook or raw tensor needs a key in the header: below this many values it costs more
# than the 2 bytes a value it saves
FLOAT16_MIN_VALUES = 16


def encode_file(create_args, layers, other_tensors=None, metadata=None, *, gap_bits=None,
                sync_interval: int = huffman.SYNC_INTERVAL, lane_symbols: int = rans.LANE_SYMBOLS,
                coders=CODERS, codebook_dtype: str = "auto") -> bytes:
    """The bytes of a compressed file (see the module docstring); ``save_compressed`` writes them.

    ``layers``: name -> QuantizedLayer; ``gap_bits``: an int for all layers, or a dict name -> int
    (others get 8 for conv, 5 for fc weights). ``coders``: the entropy coders each stream may
    use (the smaller wins; ``helpers.coding.streams``), and "cabac" if a layer may be coded whole;
    ``sync_interval`` / ``lane_symbols``: symbols per lane of a Huffman / rANS stream.
    ``codebook_dtype``: "auto" stores a codebook as float16 when that is exact (every weight
    unchanged) and it has 16 entries or more, else float32; "float32" always; "float16" always,
    rounding the weights to half precision (it changes them: check the accuracy).
    """
    rans.lane_layout(0, lane_symbols)  # bad values raise before any work
    metadata = check_metadata(metadata, (create_args or {}).get("in_channels"))
    if codebook_dtype not in CODEBOOK_DTYPES:
        raise ValueError(f"codebook_dtype must be one of {CODEBOOK_DTYPES}, got {codebook_dtype!r}")
    sections, size = [], 0

    def add(data: bytes) -> dict:  # no CRC per section (version 4): the file's CRC32 covers them
        nonlocal size
        sections.append(data)
        size += len(data)
        return {"offset": size - len(data), "length": len(data)}

    if not coders or set(coders) - set(CODERS):
        raise ValueError(f"coders must be a non-empty subset of {CODERS}, got {coders}")
    stream_coders = tuple(c for c in coders if c != "cabac") or coding.CODERS
    out_layers, jobs = [], []
    for name, q in layers.items():
        s, g = _sparse_layer(name, q, gap_bits)
        d = {"name": name, "shape": list(s.shape), "bits": s.bits, "gap_bits": g,
             "survivors": int(s.positions.size), **_codebook_entry(s.codebook, codebook_dtype, add)}
        out_layers.append(d)
        layer_jobs = [(s.indices, s.codebook.size), (gap_encode(s.positions, g), 1 << g)]
        context, streams = _context_coded(s, layer_jobs, coders, stream_coders, sync_interval, lane_symbols)
        if context is not None:
            d["cabac"] = {"index_context": context[1], "data": add(context[0])}
        elif streams is not None:  # coded already, to size them against cabac's code
            d.update(index=streams[0], gap=streams[1])
        else:
            jobs.append((d, layer_jobs))
    coded = iter(coding.encode_streams([j for _, pair in jobs for j in pair], _detached, sync_interval,
                                       lane_symbols, stream_coders))
    for d, _ in jobs:
        d.update(index=next(coded), gap=next(coded))
    for d in out_layers:  # every layer's stream sections after all codebooks and cabac data, in layer order
        for entry in (d[key] for key in ("index", "gap") if key in d):
            for key, section in entry.items():
                if isinstance(section, bytes):
                    entry[key] = add(section)
    out_tensors = [_raw_tensor_entry(name, t, add) for name, t in (other_tensors or {}).items()]
    header = {"format": "deep-compression", "version": VERSION, "create_args": dict(create_args or {}),
              "metadata": dict(metadata or {}), "sync_interval": sync_interval,
              "lane_symbols": lane_symbols, "data_bytes": size,
              "layers": out_layers, "tensors": out_tensors}
    return _framed(header, sections)


def _sparse_layer(name: str, q, gap_bits) -> tuple[SparseLayer, int]:
    """A quantized layer in the file's sparse layout (used codebook entries only) and its gap width;
    ValueError for what the reader would refuse."""
    s = SparseLayer.from_quantized(q).used_part()
    if not values_ok(s.codebook):  # the reader refuses it: write no file that cannot be read
        raise ValueError(f"layer {name}: its codebook {VALUES_PROBLEM}; retrain or fix the model first")
    g = gap_bits.get(name) if isinstance(gap_bits, dict) else gap_bits
    g = default_gap_bits(s.shape) if g is None else g
    if type(g) is not int or not 1 <= g <= 16:
        raise ValueError(f"gap_bits for {name} must be in [1, 16], got {g}")
    return s, g


def _framed(header: dict, sections: list) -> bytes:
    """Magic, version, the deflated header JSON and its CRC32, the sections, the trailer, the file's CRC32."""
    hjson = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(hjson) >= MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(hjson)} bytes (metadata too large?): "
                         f"the limit is {MAX_HEADER_BYTES}")
    hzip = zlib.compress(hjson, 9)
    head = MAGIC + struct.pack("<HHI", VERSION, 0, len(hzip)) + hzip
    body = b"".join([head, struct.pack("<I", zlib.crc32(head)), *sections, TRAILER])
    return body + struct.pack("<I", zlib.crc32(body))


def _raw_tensor_entry(name: str, t: torch.Tensor, add) -> dict:
    """A raw tensor's header entry, its bytes added to the data region: in its own dtype, or a float32
    tensor that is exactly int8 x 2**e (biases rounded by ``compact``) as int8 plus ``e``, or one
    exactly float16 (normalization tensors rounded by ``compact``) as float16: both read back to
    the same float32 bits."""
    t = t.detach().cpu().contiguous()
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise ValueError(f"tensor {name}: dtype {t.dtype} is not storable; use one of {', '.join(DTYPES)}")
    if t.is_floating_point() and not values_ok(t.float().numpy()):
        raise ValueError(f"tensor {name} {VALUES_PROBLEM}; retrain or fix the model first")
    exponent = int8_exponent(t.numpy()) if t.dtype == torch.float32 else None
    if exponent is not None:  # 1 byte a value
        arr, extra = np.ldexp(t.numpy(), -exponent).astype("i1"), {"int8_exponent": exponent}
    elif t.dtype == torch.float32 and t.numel() >= FLOAT16_MIN_VALUES and _exact_in_float16(t.numpy()):
        arr, extra = t.numpy().astype("<f2"), {"float16": True}
    else:
        arr, extra = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().astype(DTYPES[dtype][1]), {}
    return {"name": name, "dtype": dtype, "shape": list(t.shape), **extra, **add(arr.tobytes())}


def _exact_in_float16(values: np.ndarray) -> bool:
    """Every float32 value survives the round trip through float16 bit for bit (signed zeros too)."""
    with np.errstate(over="ignore"):
        back = values.astype("<f2").astype(np.float32)
    return bool(np.array_equal(back.view(np.int32), np.ascontiguousarray(values, dtype=np.float32).view(np.int32)))


def _detached(data: bytes) -> bytes:
    """``encode_streams``' ``add`` for sections placed later: the entry holds the bytes until then."""
    return data


def _context_coded(s: SparseLayer, layer_jobs, coders, stream_coders, sync_interval, lane_symbols):
    """(context, streams): ``context`` is (bytes, index_context) of ``helpers.coding.cabac``'s code of a
    layer when it is at least ``cabac.MIN_GAIN`` smaller than the layer's two streams, else None;
    ``streams`` is the two streams' entries (sections detached) when they were coded to size them,
    so that a layer where they win is not coded twice."""
    numel = math.prod(s.shape)
    if ("cabac" not in coders or not s.positions.size or numel > cabac.MAX_POSITIONS
            or not cabac.may_pay(s.shape, s.positions)):
        return None, None
    entries = coding.encode_streams(layer_jobs, _detached, sync_interval, lane_symbols, stream_coders)
    limit = (1 - cabac.MIN_GAIN) * sum(len(v) for e in entries for v in e.values() if isinstance(v, bytes))
    data, _, index_context = cabac.encode_best(s.shape, s.positions, s.indices, s.codebook.size, limit)
    return ((data, index_context), None) if len(data) <= limit else (None, entries)


def finest_int8_exponent(peak: float) -> int:
    """The smallest ``e`` with ``peak / 2**e <= 127`` (``peak`` > 0)."""
    mantissa, exponent = math.frexp(peak / 127.0)  # peak / 127 = mantissa * 2**exponent, mantissa in [0.5, 1)
    return exponent - (mantissa == 0.5)


def int8_exponent(values: np.ndarray) -> int | None:
    """``e`` such that ``values == q * 2**e`` exactly for int8 ``q`` in [-127, 127], or None.

    The smallest such ``e`` is the only one to try: values on a coarser power-of-two grid are also
    on every finer one. A power of two, not a free float scale, so that the product is exact in
    float32 both ways and the stored form needs nothing but ``e``.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0 or not np.isfinite(values).all():
        return None
    peak = float(np.abs(values).max())
    if peak == 0.0:
        return 0
    exponent = finest_int8_exponent(peak)
    if not -149 - 7 <= exponent <= 127:
        return None
    scaled = np.ldexp(values, -exponent)
    return exponent if np.array_equal(scaled, np.round(scaled)) and np.abs(scaled).max() <= 127 else None


def _codebook_entry(codebook: np.ndarray, dtype: str, add) -> dict:
    with np.errstate(over="ignore"):
        half = codebook.astype("<f2")
    if dtype == "float16" or (dtype == "auto" and codebook.size >= FLOAT16_MIN_VALUES and _exact_in_float16(codebook)):
        if not np.isfinite(half).all():
            raise ValueError("a codebook value is outside float16's range: use codebook_dtype='float32'")
        return {"codebook": add(half.tobytes()), "codebook_dtype": "float16"}
    return {"codebook": add(codebook.astype("<f4").tobytes())}


def save_compressed(path, create_args, layers, other_tensors=None, metadata=None, **kwargs) -> int:
    """Write a compressed file atomically (temp file + fsync + rename); returns its size in bytes."""
    from ..io import atomic_write_bytes

    data = encode_file(create_args, layers, other_tensors, metadata, **kwargs)
    atomic_write_bytes(path, data)
    return len(data)


def save_model(model, path, metadata=None, **kwargs) -> int:
    """Save a quantized model: its ``export_quantized`` layers, plus every other state_dict tensor.

    A registry model (``helpers.models.create``) records its constructor arguments and rebuilds
    itself on loading; any other module records its class name, and loads into an instance the
    user passes (``load_compressed(path, model=MyNet())``).
    """
    from ..quantize.quantization import export_quantized

    create_args = getattr(model, "create_args", None) or {"class": f"{type(model).__module__}."
                                                                    f"{type(model).__qualname__}"}
    layers = export_quantized(model)
    skip = {f"{name}.weight" for name in layers}
    others = {k: v for k, v in model.state_dict().items() if "parametrizations." not in k and k not in skip}
    return save_compressed(path, create_args, layers, others, metadata, **kwargs)



# ----------------------------------------------------------------------------- size accounting
_stream_bytes = coding.stream_bytes


def size_report(path_or_layers, other_tensors=None, *, gap_bits=None) -> list[dict]:
    """Per-layer sizes in the paper's Table 2-5 format, then a 'total' row.

    ``path_or_layers``: a file, or a dict name -> QuantizedLayer (then sized as it would be saved).
    Per layer: weights, kept_pct; weight_bits (P+Q: the index width; P+Q+H: Huffman index-stream
    bits per survivor); index_bits (P+Q: the gap width; P+Q+H: Huffman gap-stream bits, fillers
    included, per survivor); compress_pct (P+Q: survivors * bits + gap entries * gap_bits + the
    fp32 codebook as stored, used entries only; P+Q+H: the layer's bytes in the file: codebook,
    code-length and sync tables, streams) as % of the dense fp32 weight; the order-0 entropy
    bound of each stream in bytes. The total row adds the file size, the dense fp32 size of all
    parameters (weights and biases) and their ratio; header_bytes is everything outside the data
    region (fixed header, compressed JSON, CRCs, trailer).
    """
    if isinstance(path_or_layers, dict):
        blob = encode_file({}, path_or_layers, other_tensors, None, gap_bits=gap_bits)
    else:
        blob = _read(path_or_layers)
    p = parse(blob)
    rows, tot = [], dict.fromkeys(("weights", "kept", "ibits", "gbits", "pq", "pqh", "hi", "hg"), 0.0)
    for d in p.header["layers"]:
        s, (idx, gaps) = p.layers[d["name"]], p.symbols(d["name"])
        numel, n, k, g = math.prod(s.shape), s.positions.size, s.codebook.size, d["gap_bits"]
        ibits, gbits = _layer_bits(d, s)
        pq = n * s.bits + gaps.size * g + 32 * k
        pqh = ibits + gbits + 8 * d["codebook"]["length"]
        hi, hg = huffman.entropy_bits(np.bincount(idx)), huffman.entropy_bits(np.bincount(gaps))
        for key, v in zip(tot, (numel, n, ibits, gbits, pq, pqh, hi, hg)):
            tot[key] += v
        rows.append(_row(d["name"], numel, n, s.bits, g, ibits, gbits, pq, pqh, hi, hg))
    raw = sum(t["length"] for t in p.header["tensors"])
    dense = 4 * (int(tot["weights"]) + sum(t.numel() for t in p.tensors.values()))
    total = _row("total", int(tot["weights"]), int(tot["kept"]), None, None, *list(tot.values())[2:])
    total.update(file_bytes=p.file_bytes, dense_fp32_bytes=dense, compression_ratio=dense / p.file_bytes,
                 entropy_bytes=(tot["hi"] + tot["hg"]) / 8, raw_tensor_bytes=raw,
                 header_bytes=p.file_bytes - p.header["data_bytes"])
    return rows + [total]


def layer_coded_bytes(d: dict) -> int:
    """Bytes of a layer header entry's coded weights: its context-coded data or its two streams
    (tables included), the codebook not."""
    return d["cabac"]["data"]["length"] if "cabac" in d else _stream_bytes(d["index"]) + _stream_bytes(d["gap"])


def _layer_bits(d: dict, s: SparseLayer) -> tuple[int, int]:
    """Bits a layer's indices and positions take in the file. A context-coded layer codes both in
    one stream: the indices' share is what their decisions cost (``cabac.encode``), coded again."""
    if "cabac" not in d:
        return 8 * _stream_bytes(d["index"]), 8 * _stream_bytes(d["gap"])
    total = 8 * d["cabac"]["data"]["length"]
    index_bits = cabac.encode(s.shape, s.positions, s.indices, s.codebook.size, d["cabac"]["index_context"])[1]
    return min(round(index_bits), total), total - min(round(index_bits), total)


def _row(name, numel, n, bits, g, ibits, gbits, pq, pqh, hi, hg) -> dict:
    per = max(n, 1)
    return {"layer": name, "weights": numel, "kept_pct": 100 * n / max(numel, 1),
            "weight_bits_pq": bits, "weight_bits_pqh": ibits / per,
            "index_bits_pq": g, "index_bits_pqh": gbits / per,
            "compress_pq_pct": 100 * pq / max(32 * numel, 1),
            "compress_pqh_pct": 100 * pqh / max(32 * numel, 1),
            "index_entropy_bytes": hi / 8, "gap_entropy_bytes": hg / 8, "stored_bytes": pqh / 8}
