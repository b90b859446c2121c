"""The rANS coder (helpers.coding.rans) and the per-stream coder choice (helpers.coding.streams)."""

import numpy as np
import pytest

from helpers.coding import huffman, rans, streams


def round_trip(symbols, alphabet, lane_symbols=rans.LANE_SYMBOLS):
    """Fit, encode, serialise the model, decode; returns (model, total bytes, fit's estimate)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    model, estimate = rans.fit(symbols, alphabet, lane_symbols)
    enc = rans.encode_many([(symbols, model)], lane_symbols)[0]
    table = rans.pack_model(model)
    again = rans.unpack_model(table, alphabet)
    assert again.prob_bits == model.prob_bits and again.specials == model.specials
    assert np.array_equal(again.freqs, model.freqs)
    lanes = rans.lane_layout(symbols.size, lane_symbols)[0]
    assert enc.lane_words.size == max(lanes - 1, 0)
    got = rans.decode_many(enc.data, [rans.Stream(0, len(enc.data), symbols.size, again, enc.lane_words)],
                           lane_symbols)[0]
    assert got.dtype == np.uint16 and np.array_equal(got, symbols)
    size = len(enc.data) + 2 * enc.lane_words.size + len(table)
    return model, size, estimate


RNG = np.random.default_rng(0)
CASES = {
    "one symbol": (np.full(5000, 3), 8),
    "one symbol once": (np.array([0]), 1),
    "two symbols": (np.array([1, 0]), 2),
    "all equally likely": (np.tile(np.arange(256), 40), 256),
    "uniform random": (RNG.integers(0, 32, 30000), 32),
    "very skewed": ((RNG.random(50000) < 1e-3).astype(np.int64), 2),
    "geometric gaps": (np.minimum(RNG.geometric(0.3, 20000) - 1, 31), 32),
    "the rarest symbol last": (np.append(np.zeros(70000, np.int64), 65535), 1 << 16),
    "large alphabet": (RNG.integers(0, 5000, 20000), 1 << 16),
}


@pytest.mark.parametrize("symbols, alphabet", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("lane_symbols", [rans.LANE_SYMBOLS, 1, 7, 1000])
def test_round_trip(symbols, alphabet, lane_symbols):
    if lane_symbols == 1 and symbols.size > 10000:
        symbols = symbols[:3001]
    _, size, estimate = round_trip(symbols, alphabet, lane_symbols)
    lanes = rans.lane_layout(symbols.size, lane_symbols)[0]
    # fit's estimate counts 32 bits of state a lane; a final state holds up to 16 bits of data
    assert estimate - 2 * lanes - 2 <= size <= estimate + 2


def test_empty_streams_code_to_nothing():
    model = rans.Model(11, (), rans.quantise([1, 1], 11)[None])
    enc = rans.encode_many([(np.zeros(0, np.int64), model), (np.array([1, 0, 1]), model)])
    assert enc[0].data == b"" and enc[0].lane_words.size == 0
    got = rans.decode_many(enc[1].data, [rans.Stream(0, len(enc[1].data), 3, model, enc[1].lane_words)])
    assert got[0].tolist() == [1, 0, 1]
    assert rans.decode_many(b"", []) == []


def test_cost_is_close_to_the_entropy():
    """Order-0 streams: within 0.5 % of the entropy plus the lane states and the table."""
    for symbols, alphabet in (CASES["uniform random"], CASES["geometric gaps"], CASES["very skewed"]):
        model, size, _ = round_trip(symbols, alphabet)
        bound = huffman.entropy_bits(np.bincount(symbols)) / 8
        lanes = rans.lane_layout(symbols.size)[0]
        assert size <= 1.005 * bound + 6 * lanes + len(rans.pack_model(model))


def test_one_symbol_costs_only_the_state():
    model, size, _ = round_trip(np.full(100000, 7), 8)
    assert size == 4 * 25 + 2 * 24 + len(rans.pack_model(model))  # 25 lanes: states, sync table


def test_context_beats_order_0_on_a_markov_stream():
    """Runs: after a 0 another 0 is likely, after a 1 a 1. Order-0 sees a fair coin."""
    flips = np.random.default_rng(1).random(40000) < 0.05
    symbols = np.cumsum(flips) % 2
    model, size, _ = round_trip(symbols, 2)
    assert model.specials and size < 0.4 * huffman.entropy_bits(np.bincount(symbols)) / 8


def test_contexts_restart_at_every_lane():
    ctx = rans.contexts(np.array([5, 5, 5, 5, 5, 5, 5]), (5,), lane_symbols=3)
    assert ctx.tolist() == [0, 1, 1, 0, 1, 1, 0]  # lanes of 3, 3 and 1 symbols


@pytest.mark.parametrize("counts, bits", [([1, 1], 8), ([5, 0, 0, 1000000], 11), ([1] * 300, 9),
                                          ([3, 1, 0, 7], 15), (list(range(1, 2001)), 11)])
def test_quantise_sums_exactly_and_keeps_every_symbol(counts, bits):
    f = rans.quantise(np.array(counts), bits)
    assert f.sum() == 1 << bits and np.array_equal(f > 0, np.array(counts) > 0)


def test_quantise_refuses_too_many_symbols():
    with pytest.raises(ValueError, match="do not fit"):
        rans.quantise(np.ones(300), 8)


@pytest.mark.parametrize("table", [b"", b"\x07\x00\x01\x80", b"\x0b\x04", b"\x0b\x01\x09", b"\x0b\x00\x02\x01\x01",
                                   b"\x0b\x00\x02\x80\x08\x80\x08\x00", b"\x0b\x00\x01\x80\x10\x00",
                                   b"\x0b\x00\x09" + b"\x01" * 9, b"\x0b\x00\x01\xff\xff\xff\xff\xff"])
def test_bad_model_tables_raise(table):
    with pytest.raises(ValueError):
        rans.unpack_model(table, 8)


def test_a_good_model_table_reads():
    model = rans.unpack_model(b"\x0b\x00\x02\x80\x08\x80\x08", 8)
    assert model.prob_bits == 11 and model.freqs[0].tolist()[:2] == [1024, 1024]


def encoded(symbols, alphabet, lane_symbols=100):
    model, _ = rans.fit(symbols, alphabet, lane_symbols)
    enc = rans.encode_many([(symbols, model)], lane_symbols)[0]
    return model, bytearray(enc.data), enc.lane_words


def test_every_bit_flip_and_truncation_is_caught_or_harmless():
    """Flips either raise ValueError or decode to some stream: never another exception. A flip
    inside a lane's words changes the final state with probability ~1 - 2**-16."""
    symbols = np.minimum(np.random.default_rng(2).geometric(0.4, 1000) - 1, 15)
    model, data, lanes = encoded(symbols, 16)
    caught = 0
    for bit in range(8 * len(data)):
        data[bit // 8] ^= 1 << (bit % 8)
        try:
            rans.decode_many(bytes(data), [rans.Stream(0, len(data), 1000, model, lanes)], 100)
        except ValueError:
            caught += 1
        data[bit // 8] ^= 1 << (bit % 8)
    assert caught >= 0.99 * 8 * len(data)
    for cut in range(0, len(data), 2):
        with pytest.raises(ValueError):
            rans.decode_many(bytes(data[:cut]), [rans.Stream(0, cut, 1000, model, lanes)], 100)


@pytest.mark.parametrize("change", ["count", "lane table", "model", "odd bytes", "outside"])
def test_inconsistent_streams_raise(change):
    symbols = np.random.default_rng(3).integers(0, 8, 1000)
    model, data, lanes = encoded(symbols, 8)
    stream = rans.Stream(0, len(data), 1000, model, lanes.astype(np.int64))
    if change == "count":
        stream.count = 999
    elif change == "lane table":
        stream.lane_words = stream.lane_words + np.eye(lanes.size, dtype=np.int64)[0]
    elif change == "model":
        freqs = model.freqs.copy()
        freqs[0, :2] += [1, -1]
        stream.model = rans.Model(model.prob_bits, model.specials, freqs)
    elif change == "odd bytes":
        stream.nbytes -= 1
    else:
        stream.byte_offset = 3
    with pytest.raises(ValueError):
        rans.decode_many(bytes(data), [stream], 100)


def test_encoding_refuses_symbols_without_probability():
    model = rans.Model(11, (), rans.quantise([1, 0, 1], 11)[None])
    with pytest.raises(ValueError, match="no probability"):
        rans.encode_many([(np.array([0, 1, 2]), model)])
    with pytest.raises(ValueError, match="alphabet"):
        rans.encode_many([(np.array([3]), model)])
    with pytest.raises(ValueError, match="lane_symbols"):
        rans.lane_layout(5, 0)


# ----------------------------------------------------------------------------- choosing per stream
def test_each_stream_gets_the_smaller_coder():
    rng = np.random.default_rng(4)
    jobs = [(np.minimum(rng.geometric(0.6, 30000) - 1, 31), 32),   # skewed: rANS
            (rng.integers(0, 256, 300), 256),                       # short, flat, big alphabet: Huffman
            (np.zeros(0, np.int64), 4)]                             # empty: Huffman (nothing)
    sizes = {}
    for coders in (("huffman",), ("rans",), streams.CODERS):
        sections = []

        def add(data, sections=sections):
            sections.append(data)
            return {"offset": 0, "length": len(data), "crc32": 0}

        entries = streams.encode_streams(jobs, add, coders=coders)
        sizes[coders] = [streams.stream_bytes(e) for e in entries]
        if coders == streams.CODERS:
            assert [e["coder"] for e in entries] == ["rans", "huffman", "huffman"]
    for i in range(len(jobs)):
        assert sizes[streams.CODERS][i] == min(sizes[("huffman",)][i], sizes[("rans",)][i])
    with pytest.raises(ValueError, match="coders"):
        streams.encode_streams(jobs, None, coders=("lzma",))
