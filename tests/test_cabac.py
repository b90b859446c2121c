"""helpers.coding.cabac: context-adaptive coding of whole layers (file format version 5)."""

import base64
import json
import math
import struct

import numpy as np
import pytest
import torch

from helpers.coding import cabac
from helpers.coding import fileformat as F
from helpers.coding.fileformat import CompressedFileError
from helpers.quantize.quantization import QuantizedLayer


def layer(shape, density, k, seed=0, probs=None):
    """(positions, indices) of a random layer: each weight kept with probability ``density``."""
    rng = np.random.default_rng(seed)
    positions = np.flatnonzero(rng.random(math.prod(shape)) < density)
    indices = rng.choice(k, positions.size, p=probs)
    return positions, indices


def round_trip(shape, positions, indices, k, index_context):
    data, index_cost = cabac.encode(shape, positions, indices, k, index_context)
    got_positions, got_indices = cabac.decode(data, shape, positions.size, k, index_context)
    assert np.array_equal(got_positions, positions) and np.array_equal(got_indices, indices)
    assert 0 <= index_cost <= 8 * len(data) + 64
    return data


def entropy_bytes(counts):
    p = np.asarray(counts, float)
    p = p[p > 0] / p.sum()
    return -(p * np.log2(p)).sum() / 8


@pytest.mark.parametrize("index_context", cabac.INDEX_CONTEXTS)
@pytest.mark.parametrize("shape, density, k", [
    ((300, 784), 0.08, 32),      # LeNet-300-100's fc1 at the paper's density
    ((50, 20, 5, 5), 0.12, 256),  # a conv layer at 8 bits
    ((10, 100), 1.0, 5),          # nothing pruned
    ((7,), 0.5, 3),               # a 1-D weight: one row
    ((64, 64), 0.001, 2),         # nearly empty
])
def test_random_layers_round_trip(shape, density, k, index_context):
    round_trip(shape, *layer(shape, density, k), k, index_context)


@pytest.mark.parametrize("positions, indices, k", [
    ([0], [0], 1),                                    # one survivor, a one-entry codebook (no index bits)
    ([4095], [255], 256),                             # the very last position, the last entry
    (list(range(4096)), [7] * 4096, 256),             # every weight the same symbol
    (list(range(0, 4096, 64)), list(range(64)), 64),  # one per row, every symbol once
])
def test_adversarial_layers_round_trip(positions, indices, k):
    for index_context in cabac.INDEX_CONTEXTS:
        round_trip((64, 64), np.array(positions), np.array(indices), k, index_context)


def test_one_symbol_costs_next_to_nothing():
    shape = (256, 256)
    data = round_trip(shape, np.arange(65536), np.zeros(65536, np.int64), 32, 0)
    assert len(data) < 100, "65,536 certain decisions and 5-bit indices that never change"


def test_iid_data_costs_its_order_0_entropy():
    """Random mask, equally likely or very skewed indices: within 1 % of the order-0 bound."""
    shape, density = (500, 800), 0.05
    bound_mask = shape[0] * shape[1] * (-(density * math.log2(density) + (1 - density) * math.log2(1 - density))) / 8
    for probs in (None, [0.9] + [0.1 / 31] * 31):
        positions, indices = layer(shape, density, 32, seed=3, probs=probs)
        data = round_trip(shape, positions, indices, 32, 0)
        bound = bound_mask + positions.size * 8 * entropy_bytes(np.bincount(indices, minlength=32)) / 8
        assert bound * 0.99 < len(data) < bound * 1.01 + 64


def test_structure_costs_less_than_order_0():
    """Dead columns and units of very different fan-in: what the row/column contexts are for."""
    rng = np.random.default_rng(4)
    rows, cols = 300, 784
    fan_in = rng.choice([0.01, 0.05, 0.3], rows)      # units with few and with many inputs
    alive = rng.random(cols) < 0.8                    # dead input pixels
    mask = (rng.random((rows, cols)) < fan_in[:, None]) & alive
    positions = np.flatnonzero(mask)
    indices = rng.integers(0, 32, positions.size)
    data = round_trip((rows, cols), positions, indices, 32, 2)

    def entropy(p):
        return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))

    indices_bytes = positions.size * 5 / 8  # uniform: incompressible
    order0 = mask.size * entropy(positions.size / mask.size) / 8 + indices_bytes
    oracle = alive.sum() * entropy(fan_in).sum() / 8 + indices_bytes  # knowing every unit's fan-in
    assert oracle < len(data) < oracle * 1.02 < order0 * 0.9


def test_corrupt_data_raises_value_error_and_nothing_else():
    shape, k = (40, 100), 32
    positions, indices = layer(shape, 0.1, k, seed=5)
    data = cabac.encode(shape, positions, indices, k, 2)[0]
    for n in range(len(data)):  # every truncation
        with pytest.raises(ValueError):
            cabac.decode(data[:n], shape, positions.size, k, 2)
    with pytest.raises(ValueError, match="end"):
        cabac.decode(data + b"\0", shape, positions.size, k, 2)
    with pytest.raises(ValueError, match="survivor count"):
        cabac.decode(data, shape, positions.size + 1, k, 2)
    rng = np.random.default_rng(6)
    outcomes = set()
    for i in rng.integers(0, 8 * len(data), 300):  # bit flips: rejected, never anything else
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            cabac.decode(bytes(bad), shape, positions.size, k, 2)
            outcomes.add("decoded")
        except ValueError:
            outcomes.add("rejected")
    assert "rejected" in outcomes


def test_an_index_outside_the_codebook_is_refused():
    positions, indices = np.array([0, 5]), np.array([0, 4])  # 5 entries: a 3-bit tree can say 5..7
    data = cabac.encode((4, 4), positions, indices, 5, 0)[0]
    with pytest.raises(ValueError):
        cabac.decode(data, (4, 4), 2, 4, 0)  # the same bits read against a 4-entry codebook


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="index_context"):
        cabac.encode((2, 2), np.array([0]), np.array([0]), 2, 1)
    with pytest.raises(ValueError, match="survivors"):
        cabac.decode(b"", (2, 2), 5, 2, 0)
    for positions in ([1, 0], [0, 0], [4], [-1]):
        with pytest.raises(ValueError, match="increase strictly"):
            cabac.encode((2, 2), np.array(positions), np.zeros(len(positions), np.int64), 2, 0)
    with pytest.raises(ValueError, match="codebook"):
        cabac.encode((2, 2), np.array([0]), np.array([2]), 2, 0)


# ----------------------------------------------------------------------------- in the file
def file_layers():
    g = torch.Generator().manual_seed(11)
    rows = torch.rand(120, 1, generator=g) * 0.3  # fan-in differs by unit: the context model wins
    mask = torch.rand(120, 200, generator=g) < rows
    mask[:, 150:] = False  # dead inputs
    fc = QuantizedLayer(torch.arange(32) / 8 - 2, torch.randint(32, (120, 200), generator=g), mask, 5)
    tiny = QuantizedLayer(torch.tensor([-1.0, 1.0]), torch.randint(2, (3, 4), generator=g),
                          torch.rand(3, 4, generator=g) < 0.5, 5)  # streams win: 12 weights
    return {"fc": fc, "tiny": tiny}


@pytest.fixture(scope="module")
def cabac_file():
    return F.encode_file({"name": "x"}, file_layers(), {"fc.bias": torch.tensor([0.5, -1.0])}, {})


def test_the_writer_picks_per_layer_and_the_file_round_trips(cabac_file, tmp_path):
    header = F.parse(cabac_file).header
    assert header["version"] == F.VERSION
    kinds = {d["name"]: ("cabac" if "cabac" in d else d["index"]["coder"]) for d in header["layers"]}
    assert kinds["fc"] == "cabac" and kinds["tiny"] != "cabac"
    streams_only = F.encode_file({"name": "x"}, file_layers(), {"fc.bias": torch.tensor([0.5, -1.0])}, {},
                                 coders=("huffman", "rans"))
    assert len(cabac_file) < len(streams_only)
    path = tmp_path / "c.dcz"
    path.write_bytes(cabac_file)
    got = F.read_compressed(path)
    for name, q in file_layers().items():
        assert torch.equal(got.layers[name].mask, q.mask)
        assert torch.equal(got.layers[name].indices[q.mask], q.indices[q.mask])
    again = F.encode_file(got.create_args, got.layers, got.other_tensors, got.metadata)
    assert again == cabac_file, "saving a loaded file writes the same bytes"
    with pytest.raises(ValueError, match="coders"):
        F.encode_file({}, file_layers(), coders=("lzma",))


def test_streams_coded_to_size_a_losing_cabac_trial_are_not_coded_again(monkeypatch):
    from helpers.coding import streams

    layers, tensors = file_layers(), {"fc.bias": torch.tensor([0.5, -1.0])}
    streams_only = F.encode_file({"name": "x"}, layers, tensors, {}, coders=("huffman", "rans"))
    monkeypatch.setattr(cabac, "MIN_GAIN", 0.99)  # cabac is tried on fc and never wins
    coded, encode = [], streams.encode_streams
    monkeypatch.setattr(streams, "encode_streams", lambda jobs, *a: coded.extend(len(s) for s, _ in jobs) or
                        encode(jobs, *a))
    blob = F.encode_file({"name": "x"}, layers, tensors, {})
    assert blob == streams_only, "a trial's streams land where the batch would have put them"
    fc, tiny = (int(layers[n].mask.sum()) for n in ("fc", "tiny"))
    assert sorted(coded)[:2] == [tiny, tiny] and coded.count(fc) == 1  # each stream once (fc: indices)


def test_every_truncation_of_a_context_coded_file_raises(cabac_file):
    for n in range(len(cabac_file)):
        with pytest.raises(CompressedFileError):
            F.parse(cabac_file[:n])


def _split(blob):
    hlen = struct.unpack("<I", blob[12:16])[0]
    import zlib

    return json.loads(zlib.decompress(blob[16:16 + hlen])), bytearray(blob[20 + hlen:-8])


def _join(header, data, version=5):
    import zlib

    text = zlib.compress(json.dumps(header).encode(), 9)
    head = F.MAGIC + struct.pack("<HHI", version, 0, len(text)) + text
    body = head + struct.pack("<I", zlib.crc32(head)) + bytes(data) + F.TRAILER
    return body + struct.pack("<I", zlib.crc32(body))


def test_damaged_cabac_data_with_valid_crcs_never_raises_anything_else(cabac_file):
    header, data = _split(cabac_file)
    assert F.parse(_join(header, data)).layers  # the framing is right
    entry = header["layers"][0]["cabac"]["data"]
    rng = np.random.default_rng(2)
    outcomes = set()
    for i in rng.integers(8 * entry["offset"], 8 * (entry["offset"] + entry["length"]), 200):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            F.parse(_join(header, bad))
            outcomes.add("decoded")
        except CompressedFileError:
            outcomes.add("rejected")
    assert "rejected" in outcomes


def _edit(path, value):
    def edit(header):
        obj = header
        for key in path[:-1]:
            obj = obj[key]
        if value is KeyError:
            obj.pop(path[-1])
        else:
            obj[path[-1]] = value
    return edit


HOSTILE = {
    "index context 1": _edit(("layers", 0, "cabac", "index_context"), 1),
    "index context as a float": _edit(("layers", 0, "cabac", "index_context"), 2.0),
    "an extra key": _edit(("layers", 0, "cabac", "extra"), 1),
    "no data": _edit(("layers", 0, "cabac", "data"), KeyError),
    "one survivor more": lambda h: h["layers"][0].__setitem__("survivors", h["layers"][0]["survivors"] + 1),
    "one survivor less": lambda h: h["layers"][0].__setitem__("survivors", h["layers"][0]["survivors"] - 1),
    "other shape": _edit(("layers", 0, "shape"), [200, 120]),
    "too large for the coder": _edit(("layers", 0, "shape"), [cabac.MAX_POSITIONS + 1]),
    "streams as well": lambda h: h["layers"][0].__setitem__("index", h["layers"][1]["index"]),
    "data shortened": lambda h: h["layers"][0]["cabac"]["data"].__setitem__(
        "length", h["layers"][0]["cabac"]["data"]["length"] - 1),
}


@pytest.mark.parametrize("edit", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_cabac_headers_raise(cabac_file, edit):
    header, data = _split(cabac_file)
    edit(header)
    with pytest.raises(CompressedFileError):
        F.parse(_join(header, data))


def test_a_context_coded_layer_in_an_older_version_is_refused(cabac_file):
    header, data = _split(cabac_file)
    with pytest.raises(CompressedFileError, match="cabac"):
        F.parse(_join(header, data, version=4))


def two_context_coded_layers():
    g = torch.Generator().manual_seed(12)
    layers = {}
    for name, (rows, cols) in {"fc1": (120, 200), "fc2": (60, 120)}.items():
        mask = torch.rand(rows, cols, generator=g) < torch.rand(rows, 1, generator=g) * 0.3
        layers[name] = QuantizedLayer(torch.arange(32) / 8 - 2, torch.randint(32, (rows, cols), generator=g), mask, 5)
    return layers


def test_layers_decoded_on_parallel_threads_equal_one_thread_and_errors_still_name_the_layer():
    blob = F.encode_file({"name": "x"}, two_context_coded_layers())
    header, data = _split(blob)
    assert all("cabac" in d for d in header["layers"]), "both layers context-coded: the threads share work"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = F.parse(blob).layers
        torch.set_num_threads(2)
        two = F.parse(blob).layers
        assert all(np.array_equal(one[n].positions, two[n].positions)
                   and np.array_equal(one[n].indices, two[n].indices) for n in one)
        header["layers"][1]["survivors"] += 1  # the smaller layer, decoded second
        with pytest.raises(CompressedFileError, match="fc2"):
            F.parse(_join(header, data))
    finally:
        torch.set_num_threads(threads)
