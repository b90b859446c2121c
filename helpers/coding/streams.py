"""The entropy coding of one ``.dcz`` symbol stream: Huffman or rANS, whichever is smaller.

Every stream (a layer's codebook indices, its position gaps) is coded on its own, and the writer
picks per stream (format version 3):

* ``huffman`` (``helpers.coding.huffman``): a canonical code, of single symbols or of pairs; fields
  count, pairs, nbits, length_bits and sections lengths, sync, data, as in version 2;
* ``rans`` (``helpers.coding.rans``): a context-modelled rANS code; fields count and sections model (the
  packed frequency rows), sync (uint16 words per lane but the last), data (uint16 words).

Both sizes are computed exactly before anything is coded (tables, sync tables and rANS lane
states included), so the choice costs one model fit, not two encodings. Huffman wins on short
streams with flat statistics (its code-length table is 4 bits a symbol, a rANS row ~1.5 bytes a
symbol); rANS wins where probabilities are skewed or context helps, the bulk of every model we
measured (see ``benchmarks/bench_fileformat.py``).

Reading validates every field against the header and the file before anything is allocated and
decodes all streams of a kind together (``huffman.decode_many``, ``rans.decode_many``).
"""

from __future__ import annotations

import numpy as np

from . import huffman, rans

CODERS = ("huffman", "rans")


# ----------------------------------------------------------------------------- writing
def huffman_plan(symbols: np.ndarray, alphabet: int, sync_interval: int):
    """(coded symbols, pairs, code lengths, exact bytes) of the smaller Huffman coding."""
    best = None
    for pairs in ((False, True) if _pairs_may_pay(symbols, alphabet) else (False,)):
        coded = huffman.pair_up(symbols, alphabet) if pairs else symbols
        counts = np.bincount(coded) if coded.size else np.zeros(0, np.int64)
        lengths = huffman.code_lengths(counts) if coded.size else np.zeros(0, np.uint8)
        lanes = huffman.lane_layout(coded.size, sync_interval)[0]
        size = (-(-huffman.coded_bits(counts, lengths) // 8) + huffman.table_bytes(lengths)
                + 2 * max(lanes - 1, 0))
        if best is None or size < best[3]:
            best = (coded, pairs, lengths, size)
    return best


def _pairs_may_pay(symbols, alphabet) -> bool:
    """Pairs only help a stream dominated by one symbol (p > 1/2), and need alphabet <= 256."""
    if symbols.size < 2 or alphabet > 256:
        return False
    return int(np.bincount(symbols).max()) * 2 >= symbols.size


def encode_streams(jobs, add, sync_interval: int = huffman.SYNC_INTERVAL,
                   lane_symbols: int = rans.LANE_SYMBOLS, coders=CODERS) -> list[dict]:
    """Header entries of the streams ``jobs`` [(symbols, alphabet), ...]; ``add(bytes)`` stores a
    section and returns its header entry. ``coders``: the ones allowed (("huffman",) writes what
    a version-2 reader's streams looked like)."""
    if not coders or set(coders) - set(CODERS):
        raise ValueError(f"coders must be a non-empty subset of {CODERS}, got {coders}")
    plans = []
    for symbols, alphabet in jobs:
        symbols = np.asarray(symbols).reshape(-1)
        plan = huffman_plan(symbols, alphabet, sync_interval) if "huffman" in coders else None
        if "rans" in coders and symbols.size and np.count_nonzero(np.bincount(symbols)) <= 1 << 15:
            model, size = rans.fit(symbols, alphabet, lane_symbols)
            if plan is None or size < plan[3]:
                plan = (model, size)
        plans.append(plan or huffman_plan(symbols, alphabet, sync_interval))  # rANS codes no empty stream
    rans_jobs = [(np.asarray(s).reshape(-1), p[0]) for (s, _), p in zip(jobs, plans) if len(p) == 2]
    coded = iter(rans.encode_many(rans_jobs, lane_symbols))
    entries = []
    for (symbols, _), plan in zip(jobs, plans):  # sections in stream order: the file is deterministic
        count = int(np.asarray(symbols).size)
        if len(plan) == 2:
            enc = next(coded)
            entries.append({"coder": "rans", "count": count, "model": add(rans.pack_model(plan[0])),
                            "sync": add(enc.lane_words.astype("<u2").tobytes()), "data": add(enc.data)})
            continue
        symbols_coded, pairs, lengths, _ = plan
        enc = huffman.encode(symbols_coded, lengths, sync_interval)
        table, width = huffman.pack_lengths(lengths)
        entries.append({"coder": "huffman", "count": count, "pairs": pairs, "nbits": enc.nbits,
                        "length_bits": width, "lengths": add(table),
                        "sync": add(enc.chunk_bits.astype("<u2").tobytes()), "data": add(enc.data)})
    return entries


def stream_bytes(entry: dict) -> int:
    """Bytes a stream takes in the data region (tables, sync table, coded data)."""
    return sum(entry[key]["length"] for key in ("lengths", "model", "sync", "data") if key in entry)


# ----------------------------------------------------------------------------- reading
class StreamSpec:
    """A validated stream: what to decode and how to turn the decoded symbols into the stream."""

    def __init__(self, coder, spec, pairing=None):
        self.coder, self.spec, self.pairing = coder, spec, pairing


def read_stream(s, where, alphabet, count_range, version, section, need, data_bytes, sync,
                lane_symbols=rans.LANE_SYMBOLS):
    """Validate one stream's header entry; ``section(entry, key, where, length=None)`` gives a
    section's (bytes, absolute offset); ``need(cond, message)`` raises on a failed check."""
    need(isinstance(s, dict), f"{where}: missing")
    coder = s.get("coder", "huffman") if version >= 3 else "huffman"
    need(coder in CODERS and (version < 3 or "coder" in s), f"{where}: unknown coder {coder!r}")
    count = s.get("count")
    need(type(count) is int and count_range[0] <= count <= count_range[1],
         f"{where}: 'count' missing or out of range {list(count_range)}")
    if coder == "rans":
        return _read_rans(s, where, alphabet, count, section, need, lane_symbols)
    pairs = s.get("pairs")
    need(type(pairs) is bool and (not pairs or alphabet <= 256), f"{where}: bad 'pairs' flag")
    coded = (count + 1) // 2 if pairs else count
    nbits = s.get("nbits")
    need(type(nbits) is int and 0 <= nbits <= 8 * data_bytes, f"{where}: 'nbits' missing or out of range")
    width = 8 if version == 1 else s.get("length_bits")
    need(width in (4, 8) and type(width) is int, f"{where}: code lengths are 4 or 8 bits wide, not {width}")
    table, _ = section(s, "lengths", where)
    table_size = alphabet ** (1 + pairs)
    need(len(table) <= -(-table_size * width // 8) and (count == 0) == (len(table) == 0),
         f"{where}: bad code-length table")
    lengths = huffman.unpack_lengths(table, width)  # at most table_size + 1 entries
    need(not lengths[table_size:].any(), f"{where}: code-length table pads with a nonzero entry")
    lanes = huffman.lane_layout(coded, sync)[0]
    chunks, _ = section(s, "sync", where, 2 * max(lanes - 1, 0))
    data, at = section(s, "data", where, (nbits + 7) // 8)
    need(nbits % 8 == 0 or data[-1] >> (nbits % 8) == 0, f"{where}: nonzero padding bits")
    spec = huffman.Stream(8 * at, nbits, coded, lengths[:table_size],
                          np.frombuffer(chunks, dtype="<u2").astype(np.int64))
    return StreamSpec("huffman", spec, (alphabet, count) if pairs else None)


def _read_rans(s, where, alphabet, count, section, need, lane_symbols):
    need(set(s) == {"coder", "count", "model", "sync", "data"}, f"{where}: unexpected rANS fields")
    need(alphabet <= rans.MAX_ALPHABET, f"{where}: alphabet too large for rANS")
    raw, _ = section(s, "model", where)
    need((count == 0) == (len(raw) == 0), f"{where}: rANS model present without symbols or missing")
    try:
        model = rans.unpack_model(raw, alphabet) if count else None
    except ValueError as exc:
        need(False, f"{where}: {exc}")
    lanes = rans.lane_layout(count, lane_symbols)[0]
    table, _ = section(s, "sync", where, 2 * max(lanes - 1, 0))
    data, at = section(s, "data", where)
    need(len(data) % 2 == 0 and (count == 0) == (len(data) == 0), f"{where}: rANS data is not whole words")
    return StreamSpec("rans", rans.Stream(at, len(data), count, model,
                                          np.frombuffer(table, dtype="<u2").astype(np.int64)))


def decode_streams(buf, specs: list[StreamSpec], sync: int, lane_symbols: int) -> list[np.ndarray]:
    """Symbols of every stream (uint16), each coder's streams decoded together."""
    out = [np.zeros(0, dtype=np.uint16) for _ in specs]
    huff = [i for i, sp in enumerate(specs) if sp.coder == "huffman"]
    for i, symbols in zip(huff, huffman.decode_many(buf, [specs[i].spec for i in huff], sync)):
        pairing = specs[i].pairing
        out[i] = symbols if pairing is None else huffman.split_pairs(symbols, *pairing)
    ans = [i for i, sp in enumerate(specs) if sp.coder == "rans" and sp.spec.count]
    for i, symbols in zip(ans, rans.decode_many(buf, [specs[i].spec for i in ans], lane_symbols)):
        out[i] = symbols
    return out
