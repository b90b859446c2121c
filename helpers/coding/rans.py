"""Range asymmetric numeral systems (rANS) with numpy: the coder beyond Huffman (format version 3).

Why rANS and not Huffman alone: a symbol code spends a whole number of bits on every symbol, at
least 1, so a stream dominated by one symbol (VGG16's fc6 gaps: a filler with p = 0.73) or with
skewed but not dyadic probabilities loses up to several percent to its entropy. rANS codes a
symbol of probability f / 2**n in log2(2**n / f) bits, fractions included. Why our own and not the
``constriction`` package: its coders are sequential (one Python call codes a whole stream, but
decoding many streams with a model that switches per symbol means a Python loop over symbols,
or a (count x alphabet) probability matrix), while this one runs many lanes in lock-step like
``helpers.coding.huffman`` and switches context tables per symbol with one gather; and it adds no
dependency.

The coder: 32-bit state x in [2**16, 2**32), 16-bit renormalisation words, probabilities
quantised to ``prob_bits`` = n in [MIN_PROB_BITS, 16] (each used symbol f >= 1, a row summing to
2**n). Encoding symbol s (frequency f, cumulative start c): if x >= f << (32 - n), emit the low
16 bits and shift; then x = (x // f) << n | (x % f) + c. Decoding inverts it: slot = x mod 2**n
picks the symbol, x = f * (x >> n) + slot - c, and one 16-bit word is read when x < 2**16.

Context modelling: a model has one frequency row per context; the context of a symbol is a
function of the previous symbol in its lane: ``specials`` lists up to MAX_SPECIALS symbols that
each get their own row (row i + 1), every other symbol (and a lane's start) selects row 0. So
"after a filler" and "after a survivor" can have their own gap statistics. ``fit`` picks the
specials and n per stream by the exact coded size, tables included.

Lanes (decoding is sequential per lane): a stream is cut into ceil(count / lane_symbols)
contiguous lanes (contiguous, so that the previous symbol is in the same lane); each lane is
stored as its final encoder state (2 words) then its renormalisation words in decoding order, and
a sync table holds every lane's word count but the last (uint16). ``decode_many`` advances every
lane of every stream together, one symbol per step of ~15 numpy operations. A lane costs 32 bits
of state, so lanes are long (LANE_SYMBOLS = 16384: VGG16's 16M symbols in ~1000 lanes, 8 KB).
Integrity: every lane must end with the encoder's initial state 2**16 exactly where its sync
table says, so corrupt data is found, never decoded silently into different symbols.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATE_LOW = 1 << 16          # L: the state lives in [L, 2**32)
MIN_PROB_BITS, MAX_PROB_BITS = 8, 16
MAX_SPECIALS = 3
MAX_ALPHABET = 1 << 16
LANE_SYMBOLS = 4096          # at most 2**16 - 3, so a lane's word count fits a uint16
PROB_BITS_CHOICES = (11, 13, 15)


# ----------------------------------------------------------------------------- models
@dataclass
class Model:
    """Quantised probabilities: ``freqs`` (contexts, alphabet), each row summing to 2**prob_bits
    (or all zero: a context that never occurs); row i + 1 follows symbol ``specials[i]``."""

    prob_bits: int
    specials: tuple
    freqs: np.ndarray

    @property
    def alphabet(self) -> int:
        return self.freqs.shape[1]

    def context_of(self) -> np.ndarray:
        """Row selected after each symbol (uint32, alphabet entries)."""
        ctx = np.zeros(self.alphabet, dtype=np.uint32)
        ctx[list(self.specials)] = np.arange(1, len(self.specials) + 1, dtype=np.uint32)
        return ctx


def quantise(counts: np.ndarray, prob_bits: int) -> np.ndarray:
    """Frequencies >= 1 for every counted symbol, summing to exactly 2**prob_bits (int64)."""
    counts = np.asarray(counts, dtype=np.int64)
    total, m = int(counts.sum()), 1 << prob_bits
    f = np.zeros(counts.size, dtype=np.int64)
    if total == 0:
        return f
    used = counts > 0
    if int(used.sum()) > m:
        raise ValueError(f"{int(used.sum())} symbols do not fit {prob_bits}-bit probabilities")
    f[used] = np.maximum(1, np.rint(counts[used] * (m / total)).astype(np.int64))
    excess = int(f.sum()) - m
    while excess:  # move single units where they cost the fewest coded bits
        with np.errstate(divide="ignore", invalid="ignore"):
            if excess > 0:  # bits lost by taking one unit from each symbol (not below 1)
                cost = np.where(f > 1, counts * np.log2(f / np.maximum(f - 1, 1)), np.inf)
                pick = np.argsort(cost, kind="stable")[:min(excess, int((f > 1).sum()))]
                f[pick] -= 1
            else:  # bits saved by giving one unit to each used symbol
                gain = np.where(used, counts * np.log2((f + 1) / np.maximum(f, 1)), -np.inf)
                pick = np.argsort(-gain, kind="stable")[:min(-excess, int(used.sum()))]
                f[pick] += 1
        excess = int(f.sum()) - m
    return f


def contexts(symbols: np.ndarray, specials, lane_symbols: int = LANE_SYMBOLS) -> np.ndarray:
    """The context row of every symbol of a stream (0 at each lane's start)."""
    symbols = np.asarray(symbols)
    table = np.zeros(int(symbols.max(initial=0)) + 1 if symbols.size else 1, dtype=np.uint8)
    for i, s in enumerate(specials):
        if s < table.size:
            table[s] = i + 1
    ctx = np.zeros(symbols.size, dtype=np.uint8)
    ctx[1:] = table[symbols[:-1]]
    lanes, steps = lane_layout(symbols.size, lane_symbols)
    ctx[::max(steps, 1)] = 0
    return ctx


def fit(symbols: np.ndarray, alphabet: int, lane_symbols: int = LANE_SYMBOLS) -> tuple[Model, int]:
    """The model that codes ``symbols`` smallest, and that size in bytes (table, data, lanes)."""
    symbols = np.asarray(symbols)
    counts = np.bincount(symbols, minlength=alphabet)
    top = [int(s) for s in np.argsort(-counts, kind="stable")[:MAX_SPECIALS] if counts[s]]
    ctx = contexts(symbols, top, lane_symbols)
    joint = np.bincount(ctx.astype(np.int64) * alphabet + symbols,
                        minlength=(len(top) + 1) * alphabet).reshape(-1, alphabet)
    lanes = lane_layout(symbols.size, lane_symbols)[0]
    best = None
    for k in range(len(top) + 1):
        rows = np.vstack([joint[0] + joint[k + 1:].sum(axis=0), joint[1:k + 1]])
        for n in PROB_BITS_CHOICES:
            if int((rows > 0).sum(axis=1).max()) > 1 << n:
                continue
            freqs = np.vstack([quantise(r, n) for r in rows])
            model = Model(n, tuple(top[:k]), freqs)
            with np.errstate(divide="ignore"):
                cost = float(np.sum(rows * (n - np.log2(np.maximum(freqs, 1)))))
            size = len(pack_model(model)) + (cost + 32 * lanes) / 8 + 2 * max(lanes - 1, 0)
            if best is None or size < best[1]:
                best = (model, size)
    if best is None:
        raise ValueError("alphabet too large for rANS")
    return best[0], int(np.ceil(best[1]))


# ----------------------------------------------------------------------------- model tables
def _varints(values) -> bytes:
    out = bytearray()
    for v in values:
        v = int(v)
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _read_varints(data, count: int, at: int = 0) -> tuple[list[int], int]:
    out = []
    for _ in range(count):
        v = shift = 0
        while True:
            if at >= len(data) or shift > 28:
                raise ValueError("model table ends inside a number")
            b = data[at]
            at += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append(v)
    return out, at


def pack_model(model: Model) -> bytes:
    """prob_bits, number of specials, the specials, then per row: its length up to the last used
    symbol and its frequencies (0 = unused), all as LEB128 varints."""
    parts = [_varints([model.prob_bits, len(model.specials), *model.specials])]
    for row in model.freqs:
        used = np.flatnonzero(row)
        end = int(used[-1]) + 1 if used.size else 0
        parts.append(_varints([end, *row[:end]]))
    return b"".join(parts)


def unpack_model(data, alphabet: int) -> Model:
    """Inverse of ``pack_model``; ValueError unless every row sums to 2**prob_bits (or is empty)."""
    data = bytes(data)
    (n, k), at = _read_varints(data, 2)
    if not MIN_PROB_BITS <= n <= MAX_PROB_BITS or k > MAX_SPECIALS:
        raise ValueError("bad rANS model header")
    specials, at = _read_varints(data, k, at)
    if any(s >= alphabet for s in specials) or len(set(specials)) != k:
        raise ValueError("bad rANS context symbols")
    freqs = np.zeros((k + 1, alphabet), dtype=np.int64)
    for row in range(k + 1):
        (end,), at = _read_varints(data, 1, at)
        if end > alphabet:
            raise ValueError("rANS model row longer than the alphabet")
        values, at = _read_varints(data, end, at)
        freqs[row, :end] = values
    if at != len(data):
        raise ValueError("stray bytes after the rANS model")
    sums = freqs.sum(axis=1)
    if not np.all((sums == 1 << n) | (sums == 0)) or not sums[0]:
        raise ValueError("rANS model rows do not sum to 2**prob_bits")
    return Model(n, tuple(specials), freqs)


# ----------------------------------------------------------------------------- lanes
def lane_layout(count: int, lane_symbols: int = LANE_SYMBOLS) -> tuple[int, int]:
    """(lanes, steps): lane j codes symbols [j * steps, min((j + 1) * steps, count))."""
    if not 1 <= lane_symbols <= (1 << 16) - 3:
        raise ValueError(f"lane_symbols must be in [1, 65533], got {lane_symbols}")
    if count == 0:
        return 0, 0
    steps = -(-count // -(-count // lane_symbols))  # balanced lanes ...
    return -(-count // steps), steps               # ... and none of them empty


@dataclass
class Encoded:
    data: bytes             # uint16 words, little-endian: per lane its state, then its words
    lane_words: np.ndarray  # uint16 word count of every lane but the last (the sync table)


def encode_many(jobs: list[tuple[np.ndarray, Model]], lane_symbols: int = LANE_SYMBOLS) -> list[Encoded]:
    """rANS-code several streams together (their lanes in lock-step)."""
    plans, total_lanes, steps = [], 0, 0
    for symbols, model in jobs:
        symbols = np.asarray(symbols).reshape(-1).astype(np.int64)
        if symbols.size and (symbols.min() < 0 or symbols.max() >= model.alphabet):
            raise ValueError("symbol outside the model's alphabet")
        lanes, lane_steps = lane_layout(symbols.size, lane_symbols)
        plans.append((symbols, model, total_lanes, lanes, lane_steps))
        total_lanes, steps = total_lanes + lanes, max(steps, lane_steps)
    # The (steps, lanes) grids of every symbol's frequency and start; padding codes "f = 2**n,
    # c = 0", which leaves the state as it is and emits nothing.
    f = np.empty((steps, total_lanes), dtype=np.int64)
    c = np.zeros((steps, total_lanes), dtype=np.int64)
    n = np.empty(total_lanes, dtype=np.int64)
    for symbols, model, first, lanes, lane_steps in plans:
        if not lanes:
            continue
        cols = slice(first, first + lanes)
        flat = contexts(symbols, model.specials, lane_symbols).astype(np.int64) * model.alphabet + symbols
        freqs = model.freqs.reshape(-1)
        m, pad = 1 << model.prob_bits, lanes * lane_steps - symbols.size
        f[lane_steps:, cols] = m
        f[:lane_steps, cols] = np.concatenate([freqs[flat], np.full(pad, m)]).reshape(lanes, lane_steps).T
        if not f[:lane_steps, cols].all():
            raise ValueError("a symbol the model gives no probability occurs in the stream")
        starts = (np.cumsum(model.freqs, axis=1) - model.freqs).reshape(-1)
        c[:lane_steps, cols] = np.concatenate([starts[flat], np.zeros(pad, np.int64)]).reshape(lanes, lane_steps).T
        n[cols] = model.prob_bits
    words, emitted, state = _encode_lockstep(f, c, n)
    del f, c
    words, emitted = np.ascontiguousarray(words.T), np.ascontiguousarray(emitted.T)  # (lanes, steps)
    out = []
    for _, _, first, lanes, _ in plans:
        if not lanes:
            out.append(Encoded(b"", np.zeros(0, np.uint16)))
            continue
        w, e, x = words[first:first + lanes], emitted[first:first + lanes], state[first:first + lanes]
        per_lane = e.sum(axis=1) + 2
        stream = np.zeros(int(per_lane.sum()), dtype="<u2")
        starts = np.concatenate(([0], np.cumsum(per_lane)[:-1]))
        stream[starts] = x >> 16
        stream[starts + 1] = x & 0xFFFF
        body = np.ones(stream.size, dtype=bool)
        body[starts] = body[starts + 1] = False
        stream[body] = w[e]  # row-major over (lane, step): each lane's words in decoding order
        out.append(Encoded(stream.tobytes(), per_lane[:-1].astype(np.uint16)))
    return out


def _encode_lockstep(f, c, n):
    """Encode every lane backwards; per step: which lanes emitted a word, the words, final states.

    int64 throughout (uint64 mixes with Python ints into floats) and the quotient x // f as a
    float64 division: exact, since x < 2**32 and f < 2**17 leave 2**-49 of room, and ~2x
    faster than an integer division. x // f << n | x % f + c is computed as x + q * (2**n - f) + c.
    """
    steps, lanes = f.shape
    x = np.full(lanes, STATE_LOW, dtype=np.int64)
    words = np.empty((steps, lanes), dtype=np.uint16)
    emitted = np.empty((steps, lanes), dtype=bool)
    limit = f << (32 - n)
    grow = (1 << n) - f
    f_float = f.astype(np.float64)
    shift, q = np.empty(lanes, dtype=np.int64), np.empty(lanes, dtype=np.int64)
    quotient = np.empty(lanes, dtype=np.float64)
    for t in range(steps - 1, -1, -1):
        need = np.greater_equal(x, limit[t], out=emitted[t])
        np.copyto(words[t], x, casting="unsafe")  # low 16 bits (kept only where emitted)
        np.copyto(shift, need)
        np.left_shift(shift, 4, out=shift)
        np.right_shift(x, shift, out=x)
        np.divide(x, f_float[t], out=quotient)
        np.copyto(q, quotient, casting="unsafe")  # truncation: floor for these positives
        np.multiply(q, grow[t], out=q)
        np.add(x, q, out=x)
        np.add(x, c[t], out=x)
    return words, emitted, x


# ----------------------------------------------------------------------------- decoding
@dataclass
class Stream:
    """Where one rANS stream lies in a shared buffer (byte offset, a whole number of words)."""

    byte_offset: int
    nbytes: int
    count: int
    model: Model
    lane_words: np.ndarray  # the sync table


def decode_many(buf, streams: list[Stream], lane_symbols: int = LANE_SYMBOLS) -> list[np.ndarray]:
    """Decode several streams in lock-step; uint16 symbols each. ValueError on any inconsistency."""
    result = [np.zeros(0, dtype=np.uint16) for _ in streams]
    plans, tables, table_size, word_parts, nwords = [], [], 0, [], 0
    for i, s in enumerate(streams):
        lanes, steps = lane_layout(s.count, lane_symbols)
        if s.count == 0:
            if s.nbytes:
                raise ValueError("empty rANS stream with data")
            continue
        if s.nbytes % 2 or len(s.lane_words) != lanes - 1 or s.byte_offset < 0 \
                or s.byte_offset + s.nbytes > len(buf):
            raise ValueError("rANS stream extent or sync table does not match the stream")
        lengths = np.append(np.asarray(s.lane_words, dtype=np.int64), s.nbytes // 2
                            - int(np.sum(s.lane_words, dtype=np.int64)))
        if lengths.min() < 2 or np.any(lengths - 2 > steps):
            raise ValueError("rANS sync table does not fit the stream")
        starts = nwords + np.concatenate(([0], np.cumsum(lengths)[:-1]))
        word_parts.append(np.frombuffer(buf, dtype="<u2", count=s.nbytes // 2, offset=s.byte_offset))
        nwords += s.nbytes // 2
        tables.append(_decode_tables(s.model, table_size))
        counts = np.minimum(steps, s.count - np.arange(lanes) * steps)
        plans.append((i, lanes, steps, starts, starts + lengths, counts, table_size, s.model))
        table_size += tables[-1][0].size
    if not plans:
        return result
    steps = max(p[2] for p in plans)
    words = np.zeros(nwords + steps + 2, dtype=np.int64)  # zero padding: lanes run on harmlessly
    words[:nwords] = np.concatenate(word_parts)
    cat = lambda k: np.concatenate([p[k] for p in plans])  # noqa: E731
    n = np.concatenate([np.full(p[1], p[7].prob_bits) for p in plans]).astype(np.int64)
    row = np.concatenate([np.full(p[1], p[6]) for p in plans]).astype(np.int64)
    table = tuple(np.concatenate(part) for part in zip(*tables))
    out = _decode_lockstep(words, cat(3), cat(4), cat(5), n, row, table, steps)
    first = 0
    for i, lanes, lane_steps, *_ in plans:
        block = out[:lane_steps, first:first + lanes]
        first += lanes
        result[i] = np.ascontiguousarray(block.T).reshape(-1)[:streams[i].count]
    return result


def _decode_tables(model: Model, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Per context row and slot: symbol | (slot - start) << 16 | f << 32, and the next row's
    offset in the combined table (``base`` is this model's offset there)."""
    m = 1 << model.prob_bits
    nxt = base + model.context_of().astype(np.int64) * m
    entries, rows = [], []
    for row in model.freqs:
        if not row.any():  # a context no valid stream selects: symbol 0, f = 0, and it fails
            entries.append(np.zeros(m, dtype=np.int64))
            rows.append(np.full(m, base, dtype=np.int64))
            continue
        sym = np.repeat(np.arange(row.size, dtype=np.int64), row)
        start = np.cumsum(row) - row
        entries.append(sym | ((np.arange(m) - start[sym]) << 16) | (row[sym] << 32))
        rows.append(nxt[sym])
    return np.concatenate(entries), np.concatenate(rows)


def _decode_lockstep(words, pos, end, count, n, row, table, steps) -> np.ndarray:
    """Decode ``count[j]`` symbols in every lane j at once; (steps, lanes) uint16 symbols."""
    entry_of, next_row = table
    lanes = pos.size
    x = (words[pos] << 16) | words[pos + 1]
    pos = pos + 2
    if np.any(x < STATE_LOW):
        raise ValueError("rANS lane starts with an invalid state")
    mask = (1 << n) - 1
    out = np.empty((steps, lanes), dtype=np.uint16)
    final_x, final_pos = np.empty(lanes, dtype=np.int64), np.empty(lanes, dtype=np.int64)
    finishing = {}
    for j in np.flatnonzero(count < steps):
        finishing.setdefault(int(count[j]), []).append(j)
    idx, e, t1, w = (np.empty(lanes, dtype=np.int64) for _ in range(4))
    need = np.empty(lanes, dtype=bool)
    for t in range(steps):
        np.bitwise_and(x, mask, out=idx)
        np.add(idx, row, out=idx)
        np.take(entry_of, idx, out=e)
        np.take(next_row, idx, out=row)
        np.copyto(out[t], e, casting="unsafe")  # the low 16 bits: the symbol
        np.right_shift(x, n, out=x)          # x = f * (x >> n) + slot - start
        np.right_shift(e, 32, out=t1)
        np.multiply(x, t1, out=x)
        np.right_shift(e, 16, out=t1)
        np.bitwise_and(t1, 0xFFFF, out=t1)
        np.add(x, t1, out=x)
        np.less(x, STATE_LOW, out=need)      # renormalise: at most one word
        np.take(words, pos, out=w)
        np.multiply(w, need, out=w)
        np.copyto(t1, need)
        np.left_shift(t1, 4, out=t1)
        np.left_shift(x, t1, out=x)
        np.bitwise_or(x, w, out=x)
        np.add(pos, need, out=pos)
        if t + 1 in finishing:
            done = finishing[t + 1]
            final_x[done], final_pos[done] = x[done], pos[done]
    full = count == steps
    final_x[full], final_pos[full] = x[full], pos[full]
    if not (np.all(final_x == STATE_LOW) and np.array_equal(final_pos, end)):
        raise ValueError("a rANS lane does not end in the initial state where its sync table says")
    return out
