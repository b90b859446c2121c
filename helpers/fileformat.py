"""The compressed model file (``.dcz``): pruning + quantization + entropy coding (paper section 4).

Sparse layout (paper Fig. 2). A layer's surviving weights, in flattened C order, are stored as two
streams, each entropy-coded on its own (``helpers.streams``): with a canonical Huffman code
(``helpers.huffman``, the paper's choice) or with rANS and previous-symbol contexts
(``helpers.rans``), whichever is smaller, tables included. Or (format version 5) a layer of at
most ``cabac.MAX_POSITIONS`` weights is coded whole by ``helpers.cabac``: context-adaptive binary
arithmetic coding of its mask and indices, kept when it is at least ``cabac.MIN_GAIN`` smaller
than the two streams (trained LeNets' layers: 1-13 % smaller; see ``benchmarks/bench_nncodec.py``).
The streams:

* gap stream: for each survivor, ``position - previous position - 1`` (the first counts from -1),
  an integer in [0, M - 1] with M = 2**gap_bits - 1 (default gap_bits: 8 for conv, 5 for fc).
  A larger gap first emits FILLER entries, the reserved symbol M, each standing for a pruned
  position M further on. A filler carries no weight, so it has no entry in the index stream (the
  paper stores a zero weight there; since the gap symbol already marks it, that entry would only
  cost bits). The reader rebuilds the mask exactly: symbol s < M advances s + 1 and is a survivor,
  M advances M and is not;
* index stream: the codebook index of each survivor. Pruned weights have no index; the reader
  returns index 0 there (and the weight +0.0, as ``import_quantized`` computes it).

The codebook stored is the used part only: entries no survivor uses are dropped and the indices
renumbered, the kept entries in their order with their exact float32 bits, so every weight is
unchanged (a layer without survivors keeps its first entry, so ``codebook[0]`` stays valid). A
loaded layer so has k <= 2**bits entries; ``bits`` stays the width the layer was clustered with.
Saving a loaded model again writes the same bytes. (k-means with linear init leaves the centroids
inside the pruning gap empty: LeNet-5's conv layers use 152 and 168 of 256, so this saves 0.8 KB.)

A Huffman-coded stream dominated by one symbol (p > 1/2: the fillers of a 1 %-dense fc layer) is
coded as pairs of symbols when that is smaller, code table included: a symbol code cannot spend
under 1 bit on a symbol, which cost 7.7 % on VGG16's fc6 gaps, 0.4 % with pairs. rANS has no such
floor and conditions on the previous symbol (after a filler, gaps are distributed differently), so
it wins nearly every large stream (see ``benchmarks/bench_fileformat.py`` for the measured gain).

File layout (all integers little-endian)::

    0   8 B  magic  b"\\x89DCZ\\r\\n\\x1a\\n"  (PNG-style: detects text-mode mangling)
    8   2 B  format version (5);  10  2 B  reserved, 0;  12  4 B  H = header length
    16  H B  header: a zlib stream (level 9) of compact UTF-8 JSON: create_args, metadata
             (class_names, image_size, mean, std, ...), sync_interval (Huffman), lane_symbols
             (rANS), data_bytes, per layer its name, shape, bits, gap_bits, survivors and
             sections, per stream its coder and symbol count (Huffman: bit length, whether it is
             coded in pairs, code-length width), per raw tensor its name, dtype and shape. Inflated to at most MAX_HEADER_BYTES - 1 bytes: a longer
             one (a zlib bomb) is refused without inflating the rest.
    16+H     4 B  CRC32 of bytes [0, 16 + H)
    20+H     data region: sections back to back; every section is {offset (from the data region's
             start), length} (versions 1-3 add a crc32 each: redundant with the file's CRC32,
             and ~200 B of a LeNet-5 header). Per layer: codebook (float32, used entries), and per stream:
             code lengths (``huffman.pack_lengths``: 4 bits per symbol up to the last used one,
             or 8 bits when a code is 16 bits long; the stream's ``length_bits`` says which),
             sync table (uint16 lane lengths), bits (LSB-first); or for a rANS stream: model
             (``rans.pack_model``), lane table (uint16 words per lane), words (uint16). A
             context-coded layer has, instead of its two streams, one section: ``cabac.encode``'s
             bytes, with the index model (``index_context``) in its header entry.
             Raw tensors (biases, ...) in their dtype from an allowlist; a float32 tensor that is
             exactly int8 x 2**e (biases rounded by ``helpers.compact``) as int8 plus ``e``.
    end-8    b"DCZE" + CRC32 of everything before it.

Version 4 (read, never written) is version 5 without context-coded layers: writing with
``coders=("huffman", "rans")`` gives its data region byte for byte. Version 3 is version 4 with
a crc32 in every section and raw tensors in their own dtype only. Version 2 (read, never written) is version 3 with Huffman streams only (no ``coder`` and
``lane_symbols`` keys). Version 1 (read, never written) differs from 2 only in that its header is
plain JSON and its code-length tables are one byte per symbol (and its codebooks may hold unused
entries). The JSON of a LeNet-5
header deflates about 3x (3.3 KB -> 1.1 KB): class names and the repeated section keys.

Reading trusts nothing: every length, offset, count and shape is checked against the file size and
the header before anything is allocated, and any damage raises ``CompressedFileError``. Nothing
is ever unpickled.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from . import cabac, huffman, rans
from . import streams as coding

MAGIC = b"\x89DCZ\r\n\x1a\n"
TRAILER = b"DCZE"
VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
CODERS = (*coding.CODERS, "cabac")  # per stream: Huffman, rANS; per layer: helpers.cabac
EXTENSION = ".dcz"
MAX_HEADER_BYTES = 64 << 20  # the header, compressed and inflated
MAX_ELEMENTS = 1 << 28  # dense weights the plain reader may rebuild; VGG16 has 1.4e8 parameters
DEFAULT_GAP_BITS = {"conv": 8, "fc": 5}
CODEBOOK_DTYPES = ("auto", "float32", "float16")
CREATE_KEYS = {"name", "num_classes", "in_channels", "image_size"}  # never 'pretrained': no downloads
DTYPES = {"float32": (torch.float32, "<f4"), "float64": (torch.float64, "<f8"),
          "float16": (torch.float16, "<f2"), "bfloat16": (torch.bfloat16, "<i2"),
          "int64": (torch.int64, "<i8"), "int32": (torch.int32, "<i4"), "int16": (torch.int16, "<i2"),
          "int8": (torch.int8, "i1"), "uint8": (torch.uint8, "u1"), "bool": (torch.bool, "u1")}


class CompressedFileError(ValueError):
    """A compressed model file is corrupt, truncated, foreign or inconsistent with its model."""


class Contents(NamedTuple):
    create_args: dict
    layers: dict        # name -> QuantizedLayer
    other_tensors: dict  # state_dict name -> Tensor
    metadata: dict


# ----------------------------------------------------------------------------- sparse layout
def gap_encode(positions: np.ndarray, gap_bits: int) -> np.ndarray:
    """Gap stream (uint16 symbols) of strictly increasing flat positions; fillers are 2**g - 1."""
    filler = (1 << gap_bits) - 1
    if positions.size == 0:
        return np.zeros(0, dtype=np.uint16)
    delta = np.diff(positions, prepend=-1) - 1
    fills = delta // filler
    slot = np.cumsum(fills + 1) - 1  # where each survivor's own symbol lands
    out = np.full(int(slot[-1]) + 1, filler, dtype=np.uint16)
    out[slot] = delta - fills * filler
    return out


def gap_decode(symbols: np.ndarray, gap_bits: int, numel: int, survivors: int) -> np.ndarray:
    """Flat positions from a gap stream; ValueError unless it is exactly what encode writes."""
    filler = (1 << gap_bits) - 1
    # int32 halves the memory traffic; only where no stream, however corrupt, could overflow it
    dtype = np.int32 if symbols.size * filler < 1 << 31 else np.int64
    advance = np.arange(1, filler + 2, dtype=dtype)
    advance[filler] = filler  # symbol s < M advances s + 1, the filler M advances M
    kept = symbols != filler
    if int(np.count_nonzero(kept)) != survivors or (symbols.size and not kept[-1]):
        raise ValueError("gap stream does not match the survivor count")
    positions = np.cumsum(advance[symbols], dtype=dtype)[kept]
    positions -= 1
    if positions.size and positions[-1] >= numel:
        raise ValueError("gap stream runs past the end of the weight")
    return positions


@dataclass
class SparseLayer:
    """A quantized layer as the file holds it: survivors only."""

    shape: tuple
    bits: int
    codebook: np.ndarray   # float32 (k,)
    positions: np.ndarray  # int32 or int64, flat C-order positions of survivors
    indices: np.ndarray    # codebook index of each survivor (any integer dtype)

    @classmethod
    def from_quantized(cls, q) -> "SparseLayer":
        mask = q.mask.detach().cpu().numpy().reshape(-1)
        positions = np.flatnonzero(mask)
        indices = q.indices.detach().cpu().reshape(-1).numpy()[positions]
        codebook = q.codebook.detach().cpu().numpy()
        if codebook.dtype != np.float32 or codebook.ndim != 1:
            raise ValueError("codebook must be a 1-D float32 tensor")
        if tuple(q.indices.shape) != tuple(q.mask.shape):
            raise ValueError("indices and mask shapes differ")
        if not 1 <= int(q.bits) <= 16 or codebook.size > 1 << int(q.bits):
            raise ValueError(f"bits={q.bits} must be in [1, 16] with at most 2**bits codebook entries")
        if indices.size and (indices.min() < 0 or indices.max() >= codebook.size):
            raise ValueError("a surviving weight's index is outside the codebook")
        return cls(tuple(q.mask.shape), int(q.bits), codebook, positions, indices.astype(np.int64))

    def used_part(self) -> "SparseLayer":
        """The same weights with only the codebook entries a survivor uses, indices renumbered.

        Kept entries keep their order and float32 bits. No survivors: the first entry alone (if
        any), so index 0, which the reader gives pruned positions, still has a value.
        """
        used = np.bincount(self.indices, minlength=self.codebook.size).astype(bool)
        if not self.indices.size:
            used[:1] = True
        if used.all():
            return self
        renumber = np.cumsum(used) - 1
        return SparseLayer(self.shape, self.bits, self.codebook[used], self.positions,
                           renumber[self.indices])

    def dense(self) -> torch.Tensor:
        """The weight: codebook values at survivors, +0.0 elsewhere.

        numpy's zeros are calloc'd (and huge-page backed) so only pages that hold survivors are
        ever touched: about 3x faster than torch.zeros + scatter for VGG16's 400 MB fc6.
        """
        w = np.zeros(math.prod(self.shape), dtype=np.float32)
        w[self.positions] = self.codebook[self.indices]
        return torch.from_numpy(w).view(self.shape)

    def to_quantized(self):
        from .quantization import QuantizedLayer

        n = math.prod(self.shape)
        idx, mask = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)  # calloc'd: see dense()
        idx[self.positions], mask[self.positions] = self.indices, True
        return QuantizedLayer(torch.from_numpy(self.codebook.copy()),
                              torch.from_numpy(idx).view(self.shape), torch.from_numpy(mask).view(self.shape),
                              self.bits)


# ----------------------------------------------------------------------------- writing
def default_gap_bits(shape) -> int:
    return DEFAULT_GAP_BITS["conv" if len(shape) == 4 else "fc"]


def encode_file(create_args, layers, other_tensors=None, metadata=None, *, gap_bits=None,
                sync_interval: int = huffman.SYNC_INTERVAL, lane_symbols: int = rans.LANE_SYMBOLS,
                coders=CODERS, codebook_dtype: str = "auto") -> bytes:
    """The bytes of a compressed file (see the module docstring); ``save_compressed`` writes them.

    ``layers``: name -> QuantizedLayer; ``gap_bits``: an int for all layers, or a dict name -> int
    (others get 8 for conv, 5 for fc weights). ``coders``: the entropy coders each stream may
    use (the smaller wins; ``helpers.streams``), and "cabac" if a layer may be coded whole;
    ``sync_interval`` / ``lane_symbols``: symbols per lane of a Huffman / rANS stream. ``codebook_dtype``: "auto" stores a codebook as float16 when
    that is exact (every weight unchanged) and it has 16 entries or more, else float32; "float32" always; "float16" always,
    rounding the weights to half precision (it changes them: check the accuracy).
    """
    rans.lane_layout(0, lane_symbols)  # bad values raise before any work
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
        s = SparseLayer.from_quantized(q).used_part()
        g = gap_bits.get(name) if isinstance(gap_bits, dict) else gap_bits
        g = default_gap_bits(s.shape) if g is None else g
        if type(g) is not int or not 1 <= g <= 16:
            raise ValueError(f"gap_bits for {name} must be in [1, 16], got {g}")
        d = {"name": name, "shape": list(s.shape), "bits": s.bits, "gap_bits": g,
             "survivors": int(s.positions.size), **_codebook_entry(s.codebook, codebook_dtype, add)}
        out_layers.append(d)
        layer_jobs = [(s.indices, s.codebook.size), (gap_encode(s.positions, g), 1 << g)]
        context = _context_coded(s, layer_jobs, coders, stream_coders, sync_interval, lane_symbols)
        if context is None:
            jobs.append((d, layer_jobs))
        else:
            d["cabac"] = {"index_context": context[1], "data": add(context[0])}
    coded = iter(coding.encode_streams([j for _, pair in jobs for j in pair], add, sync_interval,
                                       lane_symbols, stream_coders))
    for d, _ in jobs:
        d.update(index=next(coded), gap=next(coded))
    out_tensors = []
    for name, t in (other_tensors or {}).items():
        t = t.detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise ValueError(f"tensor {name}: dtype {t.dtype} is not storable; use one of "
                             f"{', '.join(DTYPES)}")
        exponent = int8_exponent(t.numpy()) if t.dtype == torch.float32 else None
        if exponent is not None:  # exactly int8 x 2**exponent (e.g. rounded biases): 1 byte a value
            arr, extra = np.ldexp(t.numpy(), -exponent).astype("i1"), {"int8_exponent": exponent}
        else:
            arr, extra = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().astype(DTYPES[dtype][1]), {}
        out_tensors.append({"name": name, "dtype": dtype, "shape": list(t.shape), **extra, **add(arr.tobytes())})
    header = {"format": "deep-compression", "version": VERSION, "create_args": dict(create_args or {}),
              "metadata": dict(metadata or {}), "sync_interval": sync_interval,
              "lane_symbols": lane_symbols, "data_bytes": size,
              "layers": out_layers, "tensors": out_tensors}
    hjson = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(hjson) >= MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(hjson)} bytes (metadata too large?): "
                         f"the limit is {MAX_HEADER_BYTES}")
    hzip = zlib.compress(hjson, 9)
    head = MAGIC + struct.pack("<HHI", VERSION, 0, len(hzip)) + hzip
    body = b"".join([head, struct.pack("<I", zlib.crc32(head)), *sections, TRAILER])
    return body + struct.pack("<I", zlib.crc32(body))


def _context_coded(s: SparseLayer, layer_jobs, coders, stream_coders, sync_interval, lane_symbols):
    """(bytes, index_context) of ``helpers.cabac``'s code of a layer when it is at least
    ``cabac.MIN_GAIN`` smaller than the layer's two streams (sized exactly, by coding them), else
    None."""
    numel = math.prod(s.shape)
    if ("cabac" not in coders or not s.positions.size or numel > cabac.MAX_POSITIONS
            or not cabac.may_pay(s.shape, s.positions)):
        return None
    entries = coding.encode_streams(layer_jobs, lambda b: {"offset": 0, "length": len(b)},
                                    sync_interval, lane_symbols, stream_coders)
    limit = (1 - cabac.MIN_GAIN) * sum(map(coding.stream_bytes, entries))
    data, _, index_context = cabac.encode_best(s.shape, s.positions, s.indices, s.codebook.size, limit)
    return (data, index_context) if len(data) <= limit else None


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
        exact = np.array_equal(half.astype(np.float32).view(np.int32), codebook.view(np.int32))
    if dtype == "float16" or (dtype == "auto" and exact and codebook.size >= 16):  # else the key costs more
        if not np.isfinite(half).all():
            raise ValueError("a codebook value is outside float16's range: use codebook_dtype='float32'")
        return {"codebook": add(half.tobytes()), "codebook_dtype": "float16"}
    return {"codebook": add(codebook.astype("<f4").tobytes())}


def save_compressed(path, create_args, layers, other_tensors=None, metadata=None, **kwargs) -> int:
    """Write a compressed file atomically (temp file + fsync + rename); returns its size in bytes."""
    from .io import atomic_write_bytes

    data = encode_file(create_args, layers, other_tensors, metadata, **kwargs)
    atomic_write_bytes(path, data)
    return len(data)


def save_model(model, path, metadata=None, **kwargs) -> int:
    """Save a quantized model: its ``export_quantized`` layers, plus every other state_dict tensor.

    A registry model (``helpers.models.create``) records its constructor arguments and rebuilds
    itself on loading; any other module records its class name, and loads into an instance the
    user passes (``load_compressed(path, model=MyNet())``).
    """
    from .quantization import export_quantized

    create_args = getattr(model, "create_args", None) or {"class": f"{type(model).__module__}."
                                                                    f"{type(model).__qualname__}"}
    layers = export_quantized(model)
    skip = {f"{name}.weight" for name in layers}
    others = {k: v for k, v in model.state_dict().items() if "parametrizations." not in k and k not in skip}
    return save_compressed(path, create_args, layers, others, metadata, **kwargs)


# ----------------------------------------------------------------------------- reading
def _need(cond, message):
    if not cond:
        raise CompressedFileError(message)


def _int(d, key, lo, hi, where):
    v = d.get(key) if isinstance(d, dict) else None
    _need(type(v) is int and lo <= v <= hi, f"{where}: '{key}' missing or out of range [{lo}, {hi}]")
    return v


def _section(d, key, where, buf, start, data_bytes, used, length=None, crc_required=True):
    s = d.get(key) if isinstance(d, dict) else None
    _need(isinstance(s, dict), f"{where}: section '{key}' missing")
    off, n = _int(s, "offset", 0, data_bytes, where), _int(s, "length", 0, data_bytes, where)
    _need(off + n <= data_bytes, f"{where}: section '{key}' lies outside the file")
    _need(length is None or n == length, f"{where}: section '{key}' has {n} bytes, expected {length}")
    data = buf[start + off:start + off + n]
    # versions 1-3 keep a CRC32 per section; version 4 only the file's (checked before any section)
    _need((not crc_required and "crc32" not in s) or zlib.crc32(data) == _int(s, "crc32", 0, 2**32 - 1, where),
          f"{where}: section '{key}' fails its CRC32")
    used.append((off, n))
    return data, start + off


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

    def symbols(self, name: str) -> tuple:
        """(index symbols, gap symbols) of a layer: as its streams hold them, or for a context-coded
        layer as two streams would (rebuilt here, for reports: the load path never needs them)."""
        if name in self.streams:
            return self.streams[name]
        gap_bits = next(d["gap_bits"] for d in self.header["layers"] if d["name"] == name)
        layer = self.layers[name]
        return layer.indices, gap_encode(layer.positions, gap_bits)


def parse(buf, max_elements: int = MAX_ELEMENTS) -> Parsed:
    """Validate and decode a whole compressed file held in memory."""
    try:
        return _parse(memoryview(buf).cast("B"), max_elements)
    except CompressedFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, MemoryError,
            struct.error) as exc:
        raise CompressedFileError(f"corrupt compressed file: {exc}") from exc


def _parse(buf, max_elements) -> Parsed:
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
    sync = _int(header, "sync_interval", 1, (1 << 16) // huffman.MAX_CODE_LEN - 1, "header")
    lane_symbols = _int(header, "lane_symbols", 1, (1 << 16) - 3, "header") if version >= 3 else 1
    for key in ("create_args", "metadata"):
        _need(isinstance(header.get(key), dict), f"header: '{key}' must be an object")
    _check_metadata(header["metadata"], header["create_args"].get("in_channels"))
    layer_list, tensor_list = header.get("layers"), header.get("tensors")
    _need(isinstance(layer_list, list) and isinstance(tensor_list, list),
          "header: 'layers' or 'tensors' missing")
    used, specs, metas, total, crc_required = [], [], [], 0, version < 4
    for i, d in enumerate(layer_list):
        where = f"layer {i}"
        _need(isinstance(d, dict) and isinstance(d.get("name"), str), f"{where}: no name")
        where = f"layer {d['name']!r}"
        shape = d.get("shape")
        _need(isinstance(shape, list) and len(shape) <= 8 and all(type(x) is int and 0 <= x <= max_elements
                                                                   for x in shape), f"{where}: bad shape")
        numel = math.prod(shape)
        total += numel
        _need(total <= max_elements,
              f"{where}: more than {max_elements} weights in all (raise max_elements)")
        bits, g = _int(d, "bits", 1, 16, where), _int(d, "gap_bits", 1, 16, where)
        n = _int(d, "survivors", 0, numel, where)
        cb, _ = _section(d, "codebook", where, buf, start, data_bytes, used, crc_required=crc_required)
        half = version >= 3 and "codebook_dtype" in d
        _need(not half or d["codebook_dtype"] == "float16", f"{where}: bad codebook_dtype")
        width = 2 if half else 4
        k = len(cb) // width
        _need(len(cb) % width == 0 and k <= 1 << bits, f"{where}: codebook size does not match bits")
        codebook = np.frombuffer(cb, dtype="<f2" if half else "<f4").astype(np.float32)
        _need(np.isfinite(codebook).all(), f"{where}: codebook holds NaN or infinite values")
        if "cabac" in d:  # version 5: the layer context-coded as a whole (helpers.cabac)
            _need(version >= 5 and "index" not in d and "gap" not in d, f"{where}: 'cabac' with streams")
            e = d["cabac"]
            _need(isinstance(e, dict) and set(e) == {"index_context", "data"}
                  and e["index_context"] in cabac.INDEX_CONTEXTS and type(e["index_context"]) is int,
                  f"{where}: bad 'cabac' entry")
            _need(numel <= cabac.MAX_POSITIONS and n > 0, f"{where}: a context-coded layer of {numel} "
                  f"weights and {n} survivors")
            raw, _ = _section(e, "data", where, buf, start, data_bytes, used, None, crc_required)
            metas.append((d["name"], tuple(shape), bits, g, n, codebook, (raw, e["index_context"])))
            continue
        for key, alphabet, count_range in (("index", k, (n, n)), ("gap", 1 << g, (n, numel))):
            specs.append(coding.read_stream(
                d.get(key), f"{where} {key} stream", alphabet, count_range, version,
                lambda e, key, w, length=None: _section(e, key, w, buf, start, data_bytes, used, length,
                                                        crc_required),
                _need, data_bytes, sync, lane_symbols))
        metas.append((d["name"], tuple(shape), bits, g, n, codebook, None))
    tensors = {}
    for i, d in enumerate(tensor_list):
        where = f"tensor {i}"
        _need(isinstance(d, dict) and isinstance(d.get("name"), str) and d.get("dtype") in DTYPES,
              f"{where}: bad name or dtype")
        shape = d.get("shape")
        _need(isinstance(shape, list) and len(shape) <= 8 and all(type(x) is int and 0 <= x <= size
                                                                   for x in shape), f"{where}: bad shape")
        tdtype, ndtype = DTYPES[d["dtype"]]
        exponent = None
        if "int8_exponent" in d:  # version 4: a float32 tensor stored as int8 x 2**exponent
            _need(version >= 4 and d["dtype"] == "float32", f"{where}: int8 storage of a {d['dtype']} tensor")
            exponent = _int(d, "int8_exponent", -156, 127, where)
        raw, _ = _section({"s": d}, "s", where, buf, start, data_bytes, used,
                          math.prod(shape) * (1 if exponent is not None else np.dtype(ndtype).itemsize), crc_required)
        if exponent is not None:
            arr = np.ldexp(np.frombuffer(raw, dtype="i1").astype(np.float32), exponent).astype(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=ndtype).astype(np.dtype(ndtype).newbyteorder("="))
        _need(tdtype != torch.bool or not arr.size or arr.max() <= 1,
              f"{where}: bool tensor holds other values")
        t = torch.from_numpy(arr.astype(bool) if tdtype == torch.bool else arr)
        tensors[d["name"]] = (t.view(torch.bfloat16) if tdtype == torch.bfloat16 else t).reshape(shape)
    _need(len(tensors) == len(tensor_list), "header repeats a tensor name")
    end = 0
    for off, n in sorted(used):  # sections must tile the data region exactly
        _need(off == end, "sections overlap or leave gaps")
        end += n
    _need(end == data_bytes, "sections do not fill the data region")
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
        _need(name not in layers, f"header repeats layer {name!r}")
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


# ----------------------------------------------------------------------------- the model
def load_compressed(path, map_location="cpu", quantized: bool = True, max_elements: int = MAX_ELEMENTS,
                    model=None):
    """Rebuild the ``nn.Module`` of a compressed file.

    A file of a registry model (the paper's four, torchvision's by name) rebuilds itself through
    ``helpers.models.create``; pass ``model=`` (a fresh instance of the same architecture) for a
    file of your own class, or to load into an instance you built. Every stored shape is checked
    against the model before anything is allocated.

    ``quantized``: install the layers with ``helpers.quantization.import_quantized`` (weight =
    ``codebook[indices] * mask``, the codebook trainable; the same state_dict as after
    ``quantize_model``), straight from the survivors the file stores: no dense float weight or
    int64 index tensor is built. False gives plain dense Parameters of the same values.
    The file's metadata becomes ``model.metadata``.
    """
    from . import quantization

    p = parse(_read(path), max_elements)
    model = skeleton(p.header, model, max_elements)
    expected = model.state_dict()
    _check_fits(p, expected, model)
    values = dict(p.tensors)
    for n, s in p.layers.items():
        # a placeholder (uninitialised, its pages never touched) that import_quantized replaces
        values[f"{n}.weight"] = torch.empty(s.shape, dtype=torch.float32) if quantized else s.dense()
    model.load_state_dict(values, assign=True)  # replaces meta tensors; Parameters stay Parameters
    if quantized:
        try:  # parse has checked the survivors; import_quantized checks them again, cheaply
            quantization.import_quantized(model, p.layers)
        except ValueError as exc:
            raise CompressedFileError(f"cannot install the quantized layers: {exc}") from exc
    model.metadata = p.header["metadata"]
    return model.to(map_location)


def skeleton(header: dict, model=None, max_elements: int = MAX_ELEMENTS):
    """The module a parsed file's weights go into: ``model`` if given, else built from create_args.

    A registry model is built on the meta device (shapes only: initialising parameters would be
    wasted work), unless it has non-persistent buffers, which need their real initialisation.
    """
    from torch import nn

    from . import models

    args = header["create_args"]
    if model is not None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model= must be an nn.Module instance, got {type(model).__name__}")
        from . import quantization

        return quantization.remove_sharing(model)  # a pruned or quantized instance: plain weights again
    if "name" not in args:
        raise CompressedFileError(
            f"{header.get('create_args', {}).get('class', 'a model')} is not in the model registry, so the "
            "file cannot rebuild it: pass a fresh instance of it, load_compressed(path, model=MyNet(...)).")
    _need(set(args) <= CREATE_KEYS and models.is_known(args["name"]),
          f"create_args {args} are not a registry call")
    try:
        with torch.device("meta"):
            built = models.create(**args)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise CompressedFileError(f"cannot build the model the file describes ({args}): {exc}") from exc
    _need(sum(t.numel() for t in built.state_dict().values()) <= max_elements,
          "model too large (raise max_elements)")
    if any(k not in built.state_dict() for k, _ in built.named_buffers()):
        built = models.create(**args)
    return built


def _check_fits(p: "Parsed", expected: dict, model) -> None:
    """Every stored layer and tensor is one of the model's, with its shape and dtype, and none is missing."""
    from . import models

    what = p.header["create_args"].get("name") or type(model).__name__
    found = models.compressible_layers(model)
    for name, s in p.layers.items():
        _need(name in found and tuple(found[name].weight.shape) == s.shape,
              f"layer {name!r} {s.shape} is not a weight of {what}"
              + (f" (it has {tuple(found[name].weight.shape)})" if name in found else ""))
    stored = {f"{n}.weight" for n in p.layers} | set(p.tensors)
    _need(stored == set(expected), f"file and model {what} disagree on tensors: missing "
          f"{sorted(set(expected) - stored)[:5]}, unexpected {sorted(stored - set(expected))[:5]}")
    for name, t in p.tensors.items():
        _need(t.shape == expected[name].shape and t.dtype == expected[name].dtype,
              f"tensor {name!r} is {t.dtype} {tuple(t.shape)}, the model wants "
              f"{expected[name].dtype} {tuple(expected[name].shape)}")


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
