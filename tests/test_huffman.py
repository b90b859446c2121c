"""Canonical Huffman coding (helpers.coding.huffman) against a plain pure-Python reference coder."""

import heapq
import itertools

import numpy as np
import pytest

from helpers.coding import huffman as H


# ----------------------------------------------------------------------------- reference coder
def ref_lengths(counts):
    """Textbook Huffman: repeatedly merge the two lightest groups; every merge deepens a group by 1."""
    tie = itertools.count()
    heap = [(c, next(tie), [s]) for s, c in enumerate(counts) if c > 0]
    depth = [0] * len(counts)
    if len(heap) == 1:
        depth[heap[0][2][0]] = 1
    heapq.heapify(heap)
    while len(heap) > 1:
        ca, _, a = heapq.heappop(heap)
        cb, _, b = heapq.heappop(heap)
        for s in a + b:
            depth[s] += 1
        heapq.heappush(heap, (ca + cb, next(tie), a + b))
    return depth


def ref_codes(lengths):
    """DEFLATE's canonical assignment, as bit strings."""
    codes, code, prev = {}, 0, 0
    for s in sorted((s for s, n in enumerate(lengths) if n), key=lambda s: (lengths[s], s)):
        code <<= lengths[s] - prev
        codes[s] = format(code, f"0{lengths[s]}b")
        code, prev = code + 1, lengths[s]
    return codes


def ref_pack(symbols, lengths):
    """Code bits in stream order, packed LSB-first into bytes (the first bit is bit 0 of byte 0)."""
    codes = ref_codes(lengths)
    bits = "".join(codes[s] for s in symbols)
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b == "1":
            out[i // 8] |= 1 << (i % 8)
    return bytes(out), len(bits)


def roundtrip(symbols, lengths=None, sync_interval=H.SYNC_INTERVAL):
    symbols = np.asarray(symbols, dtype=np.int64)
    if lengths is None:
        lengths = H.code_lengths(np.bincount(symbols, minlength=1))
    enc = H.encode(symbols, lengths, sync_interval)
    dec = H.decode(enc.data, enc.nbits, symbols.size, lengths, enc.chunk_bits, sync_interval)
    np.testing.assert_array_equal(dec, symbols)
    return enc, lengths


def streams():
    rng = np.random.default_rng(0)
    yield rng.integers(0, 2, 1000)
    yield rng.integers(0, 256, 5000)
    yield np.minimum(rng.geometric(0.3, 20000) - 1, 255)
    yield rng.zipf(1.5, 10000) % 300
    yield rng.choice(17, 3000, p=np.arange(1, 18) / np.arange(1, 18).sum())


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("symbols", list(streams()), ids=lambda s: f"n{s.size}max{s.max()}")
def test_same_total_length_as_reference_and_exact_round_trip(symbols):
    counts = np.bincount(symbols)
    ours = H.code_lengths(counts)
    ref = ref_lengths(counts.tolist())
    assert max(ref) <= H.MAX_CODE_LEN  # the cap does not bind: optimal costs must match
    assert H.coded_bits(counts, ours) == sum(c * n for c, n in zip(counts, ref))
    enc, _ = roundtrip(symbols, ours)
    assert enc.nbits == H.coded_bits(counts, ours)


@pytest.mark.parametrize("symbols", list(streams())[:3], ids=["bits", "bytes", "geometric"])
def test_bit_stream_equals_reference_packing(symbols):
    symbols = symbols[:2000]  # one lane: the stream is plain concatenated codes
    lengths = H.code_lengths(np.bincount(symbols))
    enc = H.encode(symbols, lengths)
    assert (enc.data, enc.nbits) == ref_pack(symbols.tolist(), lengths.tolist())
    assert enc.chunk_bits.size == 0


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 63, 64, 65, 2047, 2048, 2049, 3 * 2048 + 5])
def test_round_trip_across_lane_boundaries(n):
    rng = np.random.default_rng(n)
    roundtrip(rng.integers(0, 40, n))
    roundtrip(rng.integers(0, 40, n), sync_interval=7)  # many short interleaved lanes


def test_one_symbol_alphabet_gets_a_one_bit_code():
    for sym in (0, 5):
        lengths = H.code_lengths(np.bincount([sym] * 11))
        assert lengths[sym] == 1 and lengths.sum() == 1
        enc, _ = roundtrip([sym] * 11, lengths)
        assert enc.nbits == 11 and len(enc.data) == 2


def test_empty_stream():
    lengths = H.code_lengths(np.zeros(4, dtype=np.int64))
    assert not lengths.any()
    enc = H.encode(np.zeros(0, dtype=np.int64), lengths)
    assert (enc.data, enc.nbits, enc.chunk_bits.size) == (b"", 0, 0)
    assert H.decode(b"", 0, 0, lengths, enc.chunk_bits).size == 0
    assert H.decode_many(b"", []) == []


def test_symbol_zero_and_last_byte_padding():
    symbols = np.array([0, 0, 1, 0, 2, 0, 0])
    enc, lengths = roundtrip(symbols)
    assert enc.nbits % 8 and enc.data[-1] >> (enc.nbits % 8) == 0  # padding bits are zero
    assert lengths[0] == 1


def test_length_cap_binds_on_fibonacci_counts():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib)
    assert max(ref_lengths(fib)) == 29
    lengths = H.code_lengths(counts)
    assert lengths.max() == H.MAX_CODE_LEN and H.kraft_ok(lengths)
    kraft = sum(2.0 ** -int(n) for n in lengths)
    assert kraft == 1.0  # still a complete code
    optimal = sum(c * n for c, n in zip(fib, ref_lengths(fib)))
    assert optimal <= H.coded_bits(counts, lengths) <= 1.01 * optimal
    symbols = np.repeat(np.arange(30), np.minimum(counts, 500))
    roundtrip(np.random.default_rng(1).permutation(symbols), lengths)


def test_full_16_bit_alphabet():
    symbols = np.random.default_rng(2).permutation(np.arange(1 << 16))
    enc, lengths = roundtrip(symbols)
    assert (lengths == 16).all() and enc.nbits == 16 << 16


def test_pairs_round_trip_and_reject_bad_padding():
    for n in (1, 2, 9):
        s = np.random.default_rng(n).integers(0, 32, n).astype(np.uint16)
        np.testing.assert_array_equal(H.split_pairs(H.pair_up(s, 32), 32, n), s)
    with pytest.raises(ValueError):
        H.split_pairs(np.array([33], dtype=np.uint16), 32, 1)  # odd stream, padding symbol 1


def test_corrupt_streams_raise_value_error_only():
    rng = np.random.default_rng(3)
    symbols = rng.integers(0, 50, 6000)
    lengths = H.code_lengths(np.bincount(symbols))
    enc = H.encode(symbols, lengths, 256)
    with pytest.raises(ValueError):
        H.decode(enc.data, enc.nbits - 1, symbols.size, lengths, enc.chunk_bits, 256)
    with pytest.raises(ValueError):
        H.decode(enc.data, enc.nbits, symbols.size + 1, lengths, enc.chunk_bits, 256)
    with pytest.raises(ValueError):
        H.decode(enc.data, enc.nbits, symbols.size, lengths, enc.chunk_bits[:-1], 256)
    with pytest.raises(ValueError):  # over-full code
        H.decode(enc.data, enc.nbits, symbols.size, np.ones(3, dtype=np.uint8), enc.chunk_bits, 256)
    with pytest.raises(ValueError):  # longer than the cap
        H.decode(enc.data, enc.nbits, symbols.size, np.array([1, 17], dtype=np.uint8), enc.chunk_bits, 256)
    incomplete = np.array([1, 2], dtype=np.uint8)  # code "11" is unassigned
    with pytest.raises(ValueError):
        H.decode(b"\xff", 2, 1, incomplete, np.zeros(0))
    for _ in range(200):  # flipped bits: an exact wrong answer is possible, any other exception is not
        data = bytearray(enc.data)
        data[rng.integers(len(data))] ^= 1 << rng.integers(8)
        try:
            H.decode(bytes(data), enc.nbits, symbols.size, lengths, enc.chunk_bits, 256)
        except ValueError:
            pass


def test_entropy_bound():
    assert H.entropy_bits([5, 5]) == 10
    assert H.entropy_bits([7]) == 0 and H.entropy_bits([]) == 0
    counts = np.bincount(np.minimum(np.random.default_rng(4).geometric(0.2, 10000), 60))
    bound = H.entropy_bits(counts)
    assert bound <= H.coded_bits(counts, H.code_lengths(counts)) <= bound + counts.sum()


def test_decode_many_mixes_stream_lengths_with_bounded_memory(monkeypatch):
    rng = np.random.default_rng(5)
    sizes = [5000, 3, 1, 0, 700, 40, 2049, 1] + [2] * 200
    symbols = [rng.integers(0, 1 + i % 30, n) for i, n in enumerate(sizes)]
    buf, specs = b"", []
    for s in symbols:
        lengths = H.code_lengths(np.bincount(s, minlength=1)) if s.size else np.zeros(0, np.uint8)
        enc = H.encode(s, lengths, 512)
        specs.append(H.Stream(8 * len(buf), enc.nbits, s.size, lengths, enc.chunk_bits))
        buf += enc.data
    cells, lockstep = [], H._lockstep
    monkeypatch.setattr(H, "_lockstep", lambda *a: cells.append(lockstep(*a).size) or lockstep(*a))
    for got, s in zip(H.decode_many(buf, specs, 512), symbols):
        np.testing.assert_array_equal(got, s)
    assert len(cells) > 1 and sum(cells) <= 4 * sum(sizes) + 512  # not 512 steps x 215 lanes


@pytest.mark.parametrize("lengths", [[], [1], [1, 1], [0, 2, 2, 1], [3, 0, 15, 15, 2], [16, 16, 1, 0, 2],
                                     list(range(16)) * 3])
def test_code_length_tables_pack_in_4_bits_up_to_15(lengths):
    lengths = np.array(lengths, dtype=np.uint8)
    data, width = H.pack_lengths(lengths)
    assert width == (8 if lengths.size and lengths.max() == 16 else 4)
    assert len(data) == H.table_bytes(lengths) == (lengths.size if width == 8 else (lengths.size + 1) // 2)
    back = H.unpack_lengths(data, width)
    np.testing.assert_array_equal(back[: lengths.size], lengths)
    assert back.size - lengths.size == (lengths.size % 2 if width == 4 else 0)
    assert not back[lengths.size:].any()
    if width == 4 and lengths.size >= 2:
        assert data[0] == lengths[0] | lengths[1] << 4  # even entry in the low nibble


def test_unpack_lengths_rejects_other_widths():
    with pytest.raises(ValueError):
        H.unpack_lengths(b"\x11", 5)
