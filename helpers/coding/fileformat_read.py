"""Reading ``.dcz`` files (the format: ``helpers.coding.fileformat``), in three steps:

1. ``declare``: check every header field and section against the file before allocating anything;
   decode nothing (raw tensors, as large as their bytes, are read and checked here);
2. for a model (``fileformat_load.open_for_model``): compare the declared layers and tensors with it, so that no
   stream is decoded into more weights than the architecture has (``_check_fits``);
3. ``Declared.decode``: the entropy-coded streams, then the model is rebuilt.

``parse`` is steps 1 and 3 for readers without a model (``read_compressed``, ``size_report``),
bounded by ``max_elements`` only.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from . import cabac, huffman
from . import streams as coding
from .fileformat_layout import (DTYPES, MAGIC, MAX_ELEMENTS, MAX_HEADER_BYTES, READABLE_VERSIONS, TRAILER,
                                VALUES_PROBLEM, CompressedFileError, Contents, SparseLayer, gap_decode,
                                gap_encode, values_ok)

def _need(cond, message):
    if not cond:
        raise CompressedFileError(message)


def _int(d, key, lo, hi, where):
    v = d.get(key) if isinstance(d, dict) else None
    _need(type(v) is int and lo <= v <= hi, f"{where}: '{key}' missing or out of range [{lo}, {hi}]")
    return v


@dataclass
class _Region:
    """The data region of a file being read: hands out its sections, each checked against the
    region, and remembers them, so that ``check_tiled`` can demand they fill it exactly."""

    buf: memoryview
    start: int          # the region's first byte in ``buf``
    data_bytes: int     # its length
    crc_required: bool  # versions 1-3 keep a CRC32 per section; version 4 on only the file's
    used: list          # (offset, length) of every section handed out

    def section(self, d, key, where, length=None):
        """The bytes of section ``d[key]`` and their position in ``buf``."""
        s = d.get(key) if isinstance(d, dict) else None
        _need(isinstance(s, dict), f"{where}: section '{key}' missing")
        off, n = _int(s, "offset", 0, self.data_bytes, where), _int(s, "length", 0, self.data_bytes, where)
        _need(off + n <= self.data_bytes, f"{where}: section '{key}' lies outside the file")
        _need(length is None or n == length, f"{where}: section '{key}' has {n} bytes, expected {length}")
        data = self.buf[self.start + off:self.start + off + n]
        _need((not self.crc_required and "crc32" not in s)
              or zlib.crc32(data) == _int(s, "crc32", 0, 2**32 - 1, where), f"{where}: section '{key}' fails its CRC32")
        self.used.append((off, n))
        return data, self.start + off

    def check_tiled(self):
        end = 0
        for off, n in sorted(self.used):  # sections must tile the data region exactly
            _need(off == end, "sections overlap or leave gaps")
            end += n
        _need(end == self.data_bytes, "sections do not fill the data region")


def _inflate_header(data: bytes) -> bytes:
    """The JSON of a version-2 header; never inflates more than MAX_HEADER_BYTES (zlib bombs)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_HEADER_BYTES)
    except zlib.error as exc:
        raise CompressedFileError(f"header is not valid zlib data: {exc}") from exc
    _need(not inflater.unconsumed_tail and len(text) < MAX_HEADER_BYTES,
          f"header inflates to {MAX_HEADER_BYTES} bytes or more: refused")
    _need(inflater.eof and not inflater.unused_data,
          "header's zlib stream is cut short or followed by stray bytes")
    return text


def _unique_dict(pairs):
    keys = [k for k, _ in pairs]
    _need(len(keys) == len(set(keys)), "header repeats a key")
    return dict(pairs)


def _bad_constant(name):
    raise CompressedFileError(f"header contains {name}")


@dataclass
class Parsed:
    header: dict
    layers: dict    # name -> SparseLayer
    tensors: dict   # name -> Tensor
    streams: dict   # name -> (index symbols, gap symbols), stream-coded layers only
    file_bytes: int

    @property
    def shapes(self) -> dict:
        """name -> shape of every layer (what ``_check_fits`` compares with a model)."""
        return {name: s.shape for name, s in self.layers.items()}

    def symbols(self, name: str) -> tuple:
        """(index symbols, gap symbols) of a layer: as its streams hold them, or for a context-coded
        layer as two streams would (rebuilt here, for reports: the load path never needs them)."""
        if name in self.streams:
            return self.streams[name]
        gap_bits = next(d["gap_bits"] for d in self.header["layers"] if d["name"] == name)
        layer = self.layers[name]
        return layer.indices, gap_encode(layer.positions, gap_bits)


@dataclass
class Declared:
    """A file whose every header field and section has been checked, nothing decoded yet: what it
    declares (layer shapes, raw tensors) can be compared with a model before any stream is
    decoded, so a small file cannot make the reader build weights its model does not have."""

    header: dict
    shapes: dict    # name -> shape of every layer
    tensors: dict   # name -> Tensor (raw tensors are as large as their bytes: read already)
    file_bytes: int
    _decode: object  # () -> Parsed

    def decode(self) -> Parsed:
        return _guarded(self._decode)


def parse(buf, max_elements: int = MAX_ELEMENTS) -> Parsed:
    """Validate and decode a whole compressed file held in memory."""
    return declare(buf, max_elements).decode()


def declare(buf, max_elements: int = MAX_ELEMENTS) -> Declared:
    """Validate a whole compressed file held in memory; decode nothing (``Declared.decode``)."""
    return _guarded(lambda: _declare(memoryview(buf).cast("B"), max_elements))


def _guarded(fn):
    """``fn()``, any error a damaged file can cause turned into ``CompressedFileError``."""
    try:
        return fn()
    except CompressedFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, MemoryError,
            struct.error) as exc:
        raise CompressedFileError(f"corrupt compressed file: {exc}") from exc


def _declare(buf, max_elements) -> Declared:
    version, header, region = _read_header(buf)
    sync = _int(header, "sync_interval", 1, (1 << 16) // huffman.MAX_CODE_LEN - 1, "header")
    lane_symbols = _int(header, "lane_symbols", 1, (1 << 16) - 3, "header") if version >= 3 else 1
    for key in ("create_args", "metadata"):
        _need(isinstance(header.get(key), dict), f"header: '{key}' must be an object")
    _check_metadata(header["metadata"], header["create_args"].get("in_channels"))
    layer_list, tensor_list = header.get("layers"), header.get("tensors")
    _need(isinstance(layer_list, list) and isinstance(tensor_list, list),
          "header: 'layers' or 'tensors' missing")
    specs, metas, total = [], [], 0
    for i, d in enumerate(layer_list):
        _need(isinstance(d, dict) and isinstance(d.get("name"), str), f"layer {i}: no name")
        _need(all(m[0] != d["name"] for m in metas), f"header repeats layer {d['name']!r}")
        meta, streams = _declare_layer(d, version, region, max_elements - total, max_elements, sync, lane_symbols)
        total += math.prod(meta[1])
        metas.append(meta)
        specs += streams
    tensors = {}
    for i, d in enumerate(tensor_list):
        name, tensors[name] = _declare_tensor(d, f"tensor {i}", version, region)
    _need(len(tensors) == len(tensor_list), "header repeats a tensor name")
    twice = sorted({f"{m[0]}.weight" for m in metas} & set(tensors))
    _need(not twice, f"the file stores {twice[:3]} twice, as a layer and as a raw tensor: which one "
          "holds the weight is ambiguous, so the file is refused (re-save the model with one of them)")
    region.check_tiled()
    size = len(buf)
    return Declared(header, {m[0]: m[1] for m in metas}, tensors, size,
                    lambda: _decode(buf, header, specs, metas, tensors, sync, lane_symbols, size))


def _read_header(buf) -> tuple[int, dict, _Region]:
    """The format version, the header's JSON and the data region, every fixed field, length and CRC32
    checked (the file's CRC32 too, before any section is read)."""
    size = len(buf)
    _need(size >= 16 and bytes(buf[:8]) == MAGIC, "not a Deep Compression file (bad magic bytes)")
    version, reserved, hlen = struct.unpack("<HHI", buf[8:16])
    _need(version in READABLE_VERSIONS, f"unsupported format version {version} (this reader knows "
          f"{', '.join(map(str, READABLE_VERSIONS))}): written by a newer version of this code?")
    _need(reserved == 0 and hlen <= MAX_HEADER_BYTES, "corrupt fixed header")
    _need(size >= 28 + hlen, f"file truncated: {size} bytes cannot hold a {hlen}-byte header")
    _need(struct.unpack("<I", buf[16 + hlen:20 + hlen])[0] == zlib.crc32(buf[:16 + hlen]),
          "header fails its CRC32")
    text = bytes(buf[16:16 + hlen])
    if version >= 2:
        text = _inflate_header(text)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_unique_dict,
                            parse_constant=_bad_constant)
    except (ValueError, RecursionError) as exc:
        raise CompressedFileError(f"header is not valid JSON: {exc}") from exc
    _need(isinstance(header, dict) and header.get("format") == "deep-compression",
          "header is not a model header")
    start = 20 + hlen
    data_bytes = _int(header, "data_bytes", 0, size, "header")
    _need(size == start + data_bytes + 8,
          f"file is {size} bytes, its header says {start + data_bytes + 8}: truncated?")
    _need(bytes(buf[size - 8:size - 4]) == TRAILER, "missing end marker")
    _need(struct.unpack("<I", buf[size - 4:])[0] == zlib.crc32(buf[:size - 4]), "file fails its CRC32")
    return version, header, _Region(buf, start, data_bytes, version < 4, [])


def _declare_layer(d, version, region, room, max_elements, sync, lane_symbols) -> tuple[tuple, list]:
    """A layer's header entry checked: its meta tuple (name, shape, bits, gap_bits, survivors,
    codebook, context-coded data or None) and the specs of its streams (none if context-coded).
    ``room``: how many more weights the file may declare in all."""
    where = f"layer {d['name']!r}"
    shape = d.get("shape")
    _need(isinstance(shape, list) and len(shape) <= 8 and all(type(x) is int and 0 <= x <= max_elements
                                                               for x in shape), f"{where}: bad shape")
    numel = math.prod(shape)
    _need(numel <= room, f"{where}: more than {max_elements} weights in all (raise max_elements)")
    bits, g = _int(d, "bits", 1, 16, where), _int(d, "gap_bits", 1, 16, where)
    n = _int(d, "survivors", 0, numel, where)
    cb, _ = region.section(d, "codebook", where)
    half = version >= 3 and "codebook_dtype" in d
    _need(not half or d["codebook_dtype"] == "float16", f"{where}: bad codebook_dtype")
    width = 2 if half else 4
    k = len(cb) // width
    _need(len(cb) % width == 0 and k <= 1 << bits, f"{where}: codebook size does not match bits")
    codebook = np.frombuffer(cb, dtype="<f2" if half else "<f4").astype(np.float32)
    _need(values_ok(codebook), f"{where}: codebook {VALUES_PROBLEM}")
    meta = (d["name"], tuple(shape), bits, g, n, codebook)
    if "cabac" in d:  # version 5: the layer context-coded as a whole (helpers.coding.cabac)
        _need(version >= 5 and "index" not in d and "gap" not in d, f"{where}: 'cabac' with streams")
        e = d["cabac"]
        _need(isinstance(e, dict) and set(e) == {"index_context", "data"}
              and e["index_context"] in cabac.INDEX_CONTEXTS and type(e["index_context"]) is int,
              f"{where}: bad 'cabac' entry")
        _need(numel <= cabac.MAX_POSITIONS and n > 0, f"{where}: a context-coded layer of {numel} "
              f"weights and {n} survivors")
        raw, _ = region.section(e, "data", where)
        return (*meta, (raw, e["index_context"])), []
    specs = [coding.read_stream(d.get(key), f"{where} {key} stream", alphabet, count_range, version,
                                region.section, _need, region.data_bytes, sync, lane_symbols)
             for key, alphabet, count_range in (("index", k, (n, n)), ("gap", 1 << g, (n, numel)))]
    return (*meta, None), specs


def _declare_tensor(d, where, version, region) -> tuple[str, torch.Tensor]:
    """A raw tensor's header entry checked, and its bytes read (they are as large as it is)."""
    _need(isinstance(d, dict) and isinstance(d.get("name"), str) and d.get("dtype") in DTYPES,
          f"{where}: bad name or dtype")
    shape = d.get("shape")
    _need(isinstance(shape, list) and len(shape) <= 8 and all(type(x) is int and 0 <= x <= len(region.buf)
                                                               for x in shape), f"{where}: bad shape")
    tdtype, ndtype = DTYPES[d["dtype"]]
    exponent = None
    if "int8_exponent" in d:  # version 4: a float32 tensor stored as int8 x 2**exponent
        _need(version >= 4 and d["dtype"] == "float32", f"{where}: int8 storage of a {d['dtype']} tensor")
        exponent = _int(d, "int8_exponent", -156, 127, where)
    if "float16" in d:  # version 6: a float32 tensor whose values are all exact in float16
        _need(version >= 6 and d["dtype"] == "float32" and d["float16"] is True and exponent is None,
              f"{where}: float16 storage of a {d['dtype']} tensor")
        ndtype = "<f2"
    itemsize = 1 if exponent is not None else np.dtype(ndtype).itemsize
    raw, _ = region.section({"s": d}, "s", where, math.prod(shape) * itemsize)
    if exponent is not None:
        arr = np.ldexp(np.frombuffer(raw, dtype="i1").astype(np.float32), exponent).astype(np.float32)
    elif ndtype == "<f2" and tdtype == torch.float32:
        arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        arr = np.frombuffer(raw, dtype=ndtype).astype(np.dtype(ndtype).newbyteorder("="))
    _need(tdtype != torch.bool or not arr.size or arr.max() <= 1, f"{where}: bool tensor holds other values")
    t = torch.from_numpy(arr.astype(bool) if tdtype == torch.bool else arr)
    t = (t.view(torch.bfloat16) if tdtype == torch.bfloat16 else t).reshape(shape)
    _need(not t.is_floating_point() or values_ok(t.float().numpy()), f"{where} {d['name']!r}: {VALUES_PROBLEM}")
    return d["name"], t


def _decode(buf, header, specs, metas, tensors, sync, lane_symbols, size) -> Parsed:
    """Every layer's streams, decoded (``_declare`` has checked everything else)."""
    try:
        symbols = coding.decode_streams(buf, specs, sync, lane_symbols)
    except ValueError as exc:
        raise CompressedFileError(f"corrupt entropy-coded stream: {exc}") from exc
    layers, streams, decoded = {}, {}, iter(symbols)
    context_decoded = _decode_context_coded(metas)
    for name, shape, bits, g, n, codebook, context in metas:
        try:
            if context is None:
                idx, gaps = next(decoded), next(decoded)
                positions = gap_decode(gaps, g, math.prod(shape), n)
                streams[name] = (idx, gaps)
            else:
                positions, idx = context_decoded[name].result()
        except ValueError as exc:
            raise CompressedFileError(f"layer {name!r}: {exc}") from exc
        layers[name] = SparseLayer(shape, bits, codebook, positions, idx)
    return Parsed(header, layers, tensors, streams, size)


def _decode_context_coded(metas) -> dict:
    """name -> a future of (positions, indices) for every context-coded layer, decoded on as many
    threads as torch uses (``cabac``'s decoder releases the GIL; each layer is sequential, so
    AlexNet's fc6 alone bounds the time), largest first."""
    jobs = sorted((m for m in metas if m[6] is not None), key=lambda m: -math.prod(m[1]))
    if not jobs:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), torch.get_num_threads()))) as pool:
        return {name: pool.submit(cabac.decode, data, shape, n, codebook.size, index_context)
                for name, shape, _, _, n, codebook, (data, index_context) in jobs}


def _check_metadata(meta: dict, in_channels) -> None:
    """The metadata keys the readers act on (helpers.evaluate): types and sane ranges, when present."""
    if "class_names" in meta:
        names = meta["class_names"]
        _need(isinstance(names, list) and 0 < len(names) <= 1 << 20 and all(isinstance(c, str) for c in names),
              "metadata: 'class_names' must be a non-empty list of strings")
    if "image_size" in meta:
        _int(meta, "image_size", 1, 4096, "metadata")
    channels = in_channels if type(in_channels) is int else None
    for key in ("mean", "std"):
        if key in meta:
            v = meta[key]
            _need(isinstance(v, list) and len(v) in ((channels,) if channels else (1, 3))
                  and all(type(x) in (int, float) and math.isfinite(x) for x in v)
                  and (key == "mean" or all(x > 0 for x in v)),
                  f"metadata: '{key}' must be a list of {channels or '1 or 3'} finite numbers"
                  + (" above 0" if key == "std" else ""))


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_compressed(path, max_elements: int = MAX_ELEMENTS) -> Contents:
    """A compressed file as plain data: create_args, layers (QuantizedLayer), other tensors, metadata."""
    p = parse(_read(path), max_elements)
    return Contents(p.header["create_args"], {n: s.to_quantized() for n, s in p.layers.items()},
                    p.tensors, p.header["metadata"])
