"""Context-adaptive binary arithmetic coding of a whole pruned, quantized layer (format version 5).

Why: the gap and index streams (``helpers.coding.streams``) are coded with static, order-0 or
previous-symbol models, so they cannot use what a layer's neighbourhood says about a position.
NNCodec (the MPEG NNC reference, DeepCABAC) coded LeNet-300-100's weights 4.5 % smaller than those
streams because it adapts as it goes. Units differ in fan-in far more than one density for the
layer can say, the rows of dead units (``helpers.prune.dead_units``) are empty, and so are the columns
of the next layer that read them. Coding the mask position by position with contexts that know
this, fc1 of the README's Fashion-MNIST LeNet-300-100 takes 13,158 B instead of its streams'
13,515 B, LeNet-5's 14,826 B instead of 15,644 B; ``benchmarks/bench_nncodec.py`` compares with
NNCodec.

The code, position by position in C order over the weight seen as (rows = shape[0], columns = the
rest): first one "alive" bit per row and per column (a row or column with a survivor), then for
every position in an alive row and column a significance bit, and after a significant one its
codebook index as a binary tree, most significant bit first. Contexts:

* significance: (how dense this row has been, in 8 steps of its ratio to the layer's density) x
  (the same for this column, over the rows before) x (the previous alive position in the row:
  survivor or not): 128 contexts. The density ratio is shrunk toward 1 by ``PRIOR`` positions, so
  the first positions of a row are not judged on one or two bits.
* index: the tree node x (the top 2 bits of the previous survivor's index in this row, or "none"):
  nodes x 5 contexts, or nodes alone (``index_context=0``): the writer keeps the smaller.

Probabilities are counts (n0, n1) per context, estimated as (n1 + 1/2) / (n + 1) and halved when
n reaches ``COUNT_LIMIT``, so they follow a layer whose statistics drift; the coder is LZMA's
range coder (32-bit range, byte output with carry propagation) with 16-bit probabilities and a
64-bit product, so a probability is never coarser than 2**-16. The coder is sequential, so it
runs in numba (a dependency already, for ``helpers.runtime.sparse_kernels``), branch-free where it can be
and with unsigned table indices (numba wraps negative signed ones around, at four instructions an
access). ``fileformat`` decodes a file's context-coded layers on parallel threads. Parsing AlexNet's
Sea Animals file (all 8 layers context-coded, 55 M decisions; ``python
benchmarks/bench_fileformat.py --file runs/sea-cpu/alexnet/alexnet.dcz``, idle 2-core Zen 5) takes
0.38 s, against 0.80 s at commit a530333 (one thread, plain loops); its fc6 alone is most of it, so a
1e8-weight layer (VGG16's fc6) would take about a second where its rANS lanes take a fraction.
The writer tries it only on layers that ``may_pay`` and keeps it when it saves ``MIN_GAIN`` or more.

Integrity: a decoder that reads past the data, decodes an index outside the codebook, a different
survivor count, or ends anywhere but the last byte raises ``ValueError``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

MAX_POSITIONS = 1 << 27   # largest layer (weights) coded this way: VGG16's fc6 (1.03e8) fits
# the writer keeps this code only when it is this much smaller than the two streams: it decodes one
# decision at a time, where rANS lanes decode in parallel (coding VGG16's random-weight conv layers
# this way saved 0.1 % and took the file benchmark's load from 0.53 s to 2.1 s, machine loaded)
MIN_GAIN = 0.01
ALWAYS_TRY = 1 << 16      # larger layers are tried only when ``may_pay`` says so
COUNT_LIMIT = 1024        # counts are halved when n0 + n1 reaches it
PRIOR = 16                # positions of prior (at the layer's density) in a row's or column's rate
RATE_STEPS = 8            # significance contexts per rate: ratio to the layer's density
INDEX_CONTEXTS = (0, 2)   # bits of the previous index that select the index model
_RATIO_EDGES = np.array([0.25, 0.5, 0.75, 1.0, 1.33, 2.0, 4.0])  # RATE_STEPS - 1 edges

# 2**32 / (2n + 2) for every count total n: a division per decision was half of the coder's time
_RECIPROCAL = np.array([(1 << 32) // (2 * n + 2) for n in range(COUNT_LIMIT)], dtype=np.int64)

_OK, _OVERRUN, _BAD_INDEX, _BAD_COUNT, _BAD_END = 0, 1, 2, 3, 4
_ERRORS = {_OVERRUN: "coded data ends too early", _BAD_INDEX: "an index lies outside the codebook",
           _BAD_COUNT: "the survivor count differs from the header's",
           _BAD_END: "coded data does not end where it should"}


def index_bits(codebook_size: int) -> int:
    """Bits of an index tree (0 for a one-entry codebook)."""
    return max(0, math.ceil(math.log2(codebook_size))) if codebook_size > 1 else 0


def matrix_shape(shape) -> tuple[int, int]:
    """(rows, columns) of a weight seen as a matrix: shape[0] x the rest."""
    shape = tuple(shape)
    rows = shape[0] if shape else 1
    return rows, (math.prod(shape[1:]) if len(shape) > 1 else 1)


# ----------------------------------------------------------------------------- the shared model
@numba.njit(cache=True, inline="always")
def _p0(counts, ctx):
    """P(bit = 0) of a context in 16 bits, in [1, 65535]."""
    slot = np.uint64(ctx)  # unsigned: no negative-index wraparound code (see helpers.runtime.sparse_kernels)
    n0, n1 = counts[slot, 0], counts[slot, 1]
    p = ((2 * n0 + 1) * _RECIPROCAL[np.uint64(n0 + n1)]) >> 16  # (n0 + 1/2) / (n + 1) without a division
    return min(max(p, 1), 65535)


@numba.njit(cache=True, inline="always")
def _update(counts, ctx, bit):
    slot = np.uint64(ctx)
    counts[slot, np.uint64(bit)] += 1
    if counts[slot, 0] + counts[slot, 1] >= COUNT_LIMIT:
        counts[slot, 0] = (counts[slot, 0] + 1) >> 1
        counts[slot, 1] = (counts[slot, 1] + 1) >> 1


@numba.njit(cache=True, inline="always")
def _rate_step(seen_ones, seen, density, edges):
    """Which of the RATE_STEPS a row's or column's density so far falls in (ratio to the layer's)."""
    ratio = (seen_ones + PRIOR * density) / ((seen + PRIOR) * density)
    step = 0
    for k in range(RATE_STEPS - 1):  # edges increase: the count of those passed, without branches
        step += ratio >= edges[k]
    return step


@numba.njit(cache=True, inline="always")
def _significance_context(row_ones, row_seen, col_ones, col_seen, density, edges, left):
    """(row's density step, column's density step, left neighbour kept): one of 128 contexts."""
    return ((_rate_step(row_ones, row_seen, density, edges) * RATE_STEPS
             + _rate_step(col_ones, col_seen, density, edges)) * 2 + left)


@numba.njit(cache=True, inline="always")
def _index_class(previous, shift):
    """The index model: 0 at a row's first survivor (or without context), else 1 + the previous
    survivor's index >> shift."""
    return 0 if (shift < 0 or previous < 0) else 1 + (previous >> shift)


# ----------------------------------------------------------------------------- the range coder
# The coder's state lives in scalars passed in and returned as tuples: numba keeps them in
# registers (held in an array, they went through memory: 36 ns a decision instead of ~9).
_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF


@numba.njit(cache=True, inline="always")
def _shift_low(low, cache, pending, emitted, out):
    """LZMA's byte output: a byte is held back (with any 0xFF after it) until no carry can reach it.
    The first byte emitted is always 0 and is not stored."""
    if low < 0xFF000000 or low > _MASK32:
        carry = low >> 32
        byte = cache
        while pending > 0:
            if emitted > 0:
                out[emitted - 1] = (byte + carry) & 0xFF
            emitted += 1
            byte = 0xFF
            pending -= 1
        cache = (low >> 24) & 0xFF
    return (low & 0x00FFFFFF) << 8, cache, pending + 1, emitted


@numba.njit(cache=True, inline="always")
def _encode_bit(low, rng, cache, pending, emitted, out, counts, ctx, bit):
    bound = (rng * _p0(counts, ctx)) >> 16
    if bit == 0:
        rng = bound
    else:
        low += bound
        rng -= bound
    _update(counts, ctx, bit)
    while rng < _TOP:
        rng <<= 8
        low, cache, pending, emitted = _shift_low(low, cache, pending, emitted, out)
    return low, rng, cache, pending, emitted


@numba.njit(cache=True, inline="always")
def _decode_bit(code, rng, pos, data, counts, ctx):
    """(bit, code, range, pos); reading past the data reads zeros (pos keeps counting)."""
    bound = (rng * _p0(counts, ctx)) >> 16
    if code < bound:
        rng = bound
        bit = 0
    else:
        code -= bound
        rng -= bound
        bit = 1
    _update(counts, ctx, bit)
    while rng < _TOP:
        rng <<= 8
        code = ((code << 8) | (data[np.uint64(pos)] if pos < data.size else 0)) & _MASK32
        pos += 1
    return bit, code, rng, pos


# ----------------------------------------------------------------------------- the layer's decisions
@numba.njit(cache=True)
def _models(nbits, shift):
    classes = 1 + (1 << (nbits - shift)) if shift >= 0 else 1
    return (np.zeros((1, 2), np.int64), np.zeros((RATE_STEPS * RATE_STEPS * 2, 2), np.int64),
            np.zeros(((1 << nbits) * classes, 2), np.int64), classes)


@numba.njit(cache=True)
def _encode(alive_rows, alive_cols, positions, indices, nbits, shift, edges, out):
    """Code a layer into ``out``; returns (bytes used, bits the index decisions cost).
    positions: increasing flat positions of the survivors, indices: theirs."""
    low, rng, cache, pending, emitted = 0, _MASK32, 0, 1, 0
    flags, sig, tree, classes = _models(nbits, shift)
    rows, cols = alive_rows.size, alive_cols.size
    for i in range(rows + cols):
        bit = alive_rows[i] if i < rows else alive_cols[i - rows]
        low, rng, cache, pending, emitted = _encode_bit(low, rng, cache, pending, emitted, out, flags, 0, bit)
    density = max(positions.size, 1) / max(1, alive_rows.sum() * alive_cols.sum())
    following = 0  # the next survivor
    col_ones, col_seen = np.zeros(cols, np.int64), np.zeros(cols, np.int64)
    index_cost = 0.0
    for r in range(rows):
        if not alive_rows[r]:
            continue
        row_ones, row_seen, left, prev = 0, 0, 0, -1
        for c in range(cols):
            if not alive_cols[c]:
                continue
            ctx = _significance_context(row_ones, row_seen, col_ones[c], col_seen[c], density, edges, left)
            bit = 1 if following < positions.size and positions[following] == r * cols + c else 0
            low, rng, cache, pending, emitted = _encode_bit(low, rng, cache, pending, emitted, out, sig, ctx, bit)
            row_seen += 1
            col_seen[c] += 1
            left = bit
            if bit:
                row_ones += 1
                col_ones[c] += 1
                value = indices[following]
                following += 1
                cls = _index_class(prev, shift)
                node = 1
                for b in range(nbits - 1, -1, -1):
                    ibit = (value >> b) & 1
                    p0 = _p0(tree, node * classes + cls) / 65536.0
                    index_cost -= math.log2(p0 if ibit == 0 else 1.0 - p0)
                    low, rng, cache, pending, emitted = _encode_bit(low, rng, cache, pending, emitted, out,
                                                                    tree, node * classes + cls, ibit)
                    node = 2 * node + ibit
                prev = value
    for _ in range(5):
        low, cache, pending, emitted = _shift_low(low, cache, pending, emitted, out)
    return emitted - 1, index_cost


@numba.njit(cache=True, nogil=True)  # fileformat decodes a file's layers on parallel threads
def _decode(data, rows, cols, survivors, codebook_size, nbits, shift, edges, positions, indices):
    """Fill positions / indices (survivors entries); returns an error code (_OK when sound)."""
    code, rng, pos = 0, _MASK32, 0
    for _ in range(4):
        code = (code << 8) | (data[pos] if pos < data.size else 0)
        pos += 1
    flags, sig, tree, classes = _models(nbits, shift)
    alive_rows, alive_cols = np.zeros(rows, np.bool_), np.zeros(cols, np.bool_)
    for i in range(rows + cols):
        bit, code, rng, pos = _decode_bit(code, rng, pos, data, flags, 0)
        if i < rows:
            alive_rows[i] = bit
        else:
            alive_cols[i - rows] = bit
    density = max(survivors, 1) / max(1, alive_rows.sum() * alive_cols.sum())
    col_ones, col_seen = np.zeros(cols, np.int64), np.zeros(cols, np.int64)
    found = 0
    for r in range(rows):
        if not alive_rows[r]:
            continue
        row_ones, row_seen, left, prev = 0, 0, 0, -1
        for c in range(cols):
            if not alive_cols[c]:
                continue
            ctx = _significance_context(row_ones, row_seen, col_ones[c], col_seen[c], density, edges, left)
            bit, code, rng, pos = _decode_bit(code, rng, pos, data, sig, ctx)
            row_seen += 1
            col_seen[c] += 1
            left = bit
            if bit:
                if found == survivors:
                    return _BAD_COUNT
                row_ones += 1
                col_ones[c] += 1
                cls = _index_class(prev, shift)
                node = 1
                for _ in range(nbits):
                    ibit, code, rng, pos = _decode_bit(code, rng, pos, data, tree, node * classes + cls)
                    node = 2 * node + ibit
                value = node - (1 << nbits)
                if value >= codebook_size:
                    return _BAD_INDEX
                positions[found], indices[found] = r * cols + c, value
                found += 1
                prev = value
        if pos > data.size + 4:
            return _OVERRUN
    if found != survivors:
        return _BAD_COUNT
    if pos > data.size:
        return _OVERRUN
    return _OK if pos == data.size else _BAD_END


# ----------------------------------------------------------------------------- the API
def encode(shape, positions, indices, codebook_size: int, index_context: int) -> tuple[bytes, float]:
    """(coded bytes, bits spent on the indices) of a layer: survivors at flat C-order ``positions``
    with codebook ``indices``. The second is the sum of -log2 p over the index decisions: the
    indices' share of the bytes, the rest being the positions'."""
    if index_context not in INDEX_CONTEXTS:
        raise ValueError(f"index_context must be one of {INDEX_CONTEXTS}, got {index_context}")
    rows, cols = matrix_shape(shape)
    positions, indices = np.asarray(positions, np.int64), np.asarray(indices, np.int64)
    if positions.size != indices.size or (positions.size and (np.any(np.diff(positions) <= 0) or positions[0] < 0
                                                             or positions[-1] >= rows * cols)):
        raise ValueError("positions must increase strictly inside the layer, one index each")
    if indices.size and (indices.min() < 0 or indices.max() >= codebook_size):
        raise ValueError(f"an index lies outside the {codebook_size}-entry codebook")
    alive_rows = (np.bincount(positions // cols, minlength=rows) > 0).astype(np.uint8)
    alive_cols = (np.bincount(positions % cols, minlength=cols) > 0).astype(np.uint8)
    nbits = index_bits(codebook_size)
    shift = nbits - index_context if index_context and nbits >= index_context else -1
    # an upper bound: a decision costs at most 16 bits (p >= 2**-16), plus the flush
    out = np.zeros(16 + 2 * (rows + cols + rows * cols + positions.size * nbits), np.uint8)
    used, index_cost = _encode(alive_rows, alive_cols, positions, indices, nbits, shift, _RATIO_EDGES, out)
    return out[:used].tobytes(), index_cost


def may_pay(shape, positions) -> bool:
    """Whether trying this code on a layer is worth its time: always for a small layer (at most
    ``ALWAYS_TRY`` weights), else when knowing every row's (or column's) density would save bits
    against one density for the layer, an estimate from counts alone. Random masks (the VGG16
    file benchmark's) estimate -0.01 to 0 % and are skipped: trying their 14.7 M conv weights took
    3 s for 58 bytes; trained LeNets' big layers estimate +0.4 to +8 %."""
    rows, cols = matrix_shape(shape)
    numel, n = rows * cols, positions.size
    if numel <= ALWAYS_TRY:
        return True
    if n == 0 or n == numel:
        return False

    def bits(count, total):  # total x binary entropy of count / total, summed
        p = np.clip(count / total, 1e-12, 1 - 1e-12)
        return float((total * -(p * np.log2(p) + (1 - p) * np.log2(1 - p))).sum())

    per_row = np.bincount(positions // cols, minlength=rows)
    per_col = np.bincount(positions % cols, minlength=cols)
    alive_rows, alive_cols = int(np.count_nonzero(per_row)), int(np.count_nonzero(per_col))
    by_rows = bits(per_row[per_row > 0], alive_cols) + rows + cols
    by_cols = bits(per_col[per_col > 0], alive_rows) + rows + cols
    return bits(np.array([n]), numel) > min(by_rows, by_cols)


def encode_best(shape, positions, indices, codebook_size: int, limit: float = math.inf):
    """(bytes, index bits, index_context) of the smaller of the two index models. The second
    (no index context) is tried only when the first comes within 3 % of ``limit`` bytes: they
    differ by 1-2 % (LeNet-300-100's fc1: 13,158 B with the context, 13,398 B without)."""
    first = (*encode(shape, positions, indices, codebook_size, 2), 2)
    if len(first[0]) > 1.03 * limit:
        return first
    second = (*encode(shape, positions, indices, codebook_size, 0), 0)
    return min(first, second, key=lambda coded: len(coded[0]))


def decode(data, shape, survivors: int, codebook_size: int, index_context: int):
    """(positions int64, indices int64) of a layer from ``encode``'s bytes; ValueError if corrupt."""
    if index_context not in INDEX_CONTEXTS:
        raise ValueError(f"index_context must be one of {INDEX_CONTEXTS}, got {index_context}")
    rows, cols = matrix_shape(shape)
    if not 0 <= survivors <= rows * cols:
        raise ValueError(f"{survivors} survivors in a layer of {rows * cols} weights")
    nbits = index_bits(codebook_size)
    shift = nbits - index_context if index_context and nbits >= index_context else -1
    positions, indices = np.zeros(survivors, np.int64), np.zeros(survivors, np.int64)
    error = _decode(np.frombuffer(data, np.uint8), rows, cols, survivors, codebook_size, nbits, shift,
                    _RATIO_EDGES, positions, indices)
    if error != _OK:
        raise ValueError(f"context-coded layer: {_ERRORS[error]}")
    return positions, indices
