"""The compressed model file (helpers.coding.fileformat): layout, exact round trips, hostile inputs."""

import inspect
import io
import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

import helpers
from helpers.coding import fileformat as F
from helpers.coding import fileformat_read
from helpers import models
from helpers.coding.fileformat import CompressedFileError
from helpers.quantize.quantization import QuantizedLayer


# ----------------------------------------------------------------------------- helpers
def quantize(model, density, seed=0, random_pruned_indices=True):
    """Prune by magnitude, quantize with random codebooks/indices; the model gets those weights."""
    gen = torch.Generator().manual_seed(seed)
    layers = {}
    with torch.no_grad():
        for name, m in models.compressible_layers(model).items():
            w = m.weight
            sample = w.reshape(-1)[torch.randint(w.numel(), (min(w.numel(), 20000),), generator=gen)]
            mask = w.abs() >= sample.abs().quantile(1 - density)
            bits = 8 if w.ndim == 4 else 5
            codebook = torch.randn(2 ** bits, generator=gen)
            if random_pruned_indices:
                indices = torch.randint(2 ** bits, w.shape, generator=gen)
            else:
                indices = torch.zeros(w.shape, dtype=torch.int64)
                indices[mask] = torch.randint(2 ** bits, (int(mask.sum()),), generator=gen)
            layers[name] = q = QuantizedLayer(codebook, indices, mask, bits)
            m.weight.data = q.weight()
    others = {k: v for k, v in model.state_dict().items() if k.removesuffix(".weight") not in layers}
    return layers, others


def sparse_model(name, classes, channels, size, density, seed=0):
    """A big model without dense random init: for iid random weights, magnitude pruning keeps a
    uniformly random subset, so draw the survivors' positions directly (about 2x faster)."""
    rng = np.random.default_rng(seed)
    with torch.device("meta"):
        model = models.create(name, classes, channels, size)
    layers, state = {}, {}
    weights = {f"{key}.weight" for key in models.compressible_layers(model)}
    for key, t in model.state_dict().items():
        if key not in weights:
            state[key] = torch.from_numpy(rng.standard_normal(t.shape).astype(np.float32) * 0.1)
    for key, m in models.compressible_layers(model).items():
        shape, numel = tuple(m.weight.shape), m.weight.numel()
        bits = 8 if len(shape) == 4 else 5
        pos = np.sort(rng.integers(0, numel, max(1, round(density * numel))))
        pos = pos[np.diff(pos, prepend=-1) > 0]
        mask, idx = np.zeros(numel, dtype=bool), np.zeros(numel, dtype=np.int64)
        mask[pos], idx[pos] = True, rng.integers(0, 2 ** bits, pos.size)
        codebook = torch.from_numpy(rng.standard_normal(2 ** bits).astype(np.float32))
        layers[key] = q = QuantizedLayer(codebook, torch.from_numpy(idx).view(shape),
                                         torch.from_numpy(mask).view(shape), bits)
        state[f"{key}.weight"] = q.weight()
    model.load_state_dict(state, assign=True)
    others = {k: v for k, v in state.items() if k.removesuffix(".weight") not in layers}
    return model, layers, others


def used_entries(q: QuantizedLayer) -> torch.Tensor:
    """The codebook entries a file keeps, in order: those a survivor uses (none used: the first)."""
    if q.mask.any():
        return torch.unique(q.indices[q.mask].long())
    return torch.arange(min(1, q.codebook.numel()))


def assert_same_layers(a: QuantizedLayer, b: QuantizedLayer):
    assert a.bits == b.bits  # the clustering width, even where the stored codebook is smaller
    used = used_entries(a)
    assert torch.equal(a.codebook[used].view(torch.int32), b.codebook.view(torch.int32))  # bit for bit
    assert torch.equal(a.mask, b.mask)
    assert torch.equal(used[b.indices[b.mask]], a.indices[a.mask].long())  # renumbered, same entries
    assert not b.indices[~b.mask].any()  # pruned positions read back as index 0
    assert b.indices.dtype == torch.int64 and b.mask.dtype == torch.bool
    wa, wb = a.weight(), b.weight()
    assert torch.equal(wa[a.mask].view(torch.int32), wb[b.mask].view(torch.int32))  # survivors: bits
    if torch.isfinite(a.codebook).all():  # else codebook * False is NaN at pruned positions
        assert torch.equal(wa, wb)


def assert_same_model(original, loaded, layers, others, in_channels, size):
    found, reference = models.compressible_layers(loaded), models.compressible_layers(original)
    for name, q in layers.items():
        w, exact = found[name].weight, reference[name].weight  # the original's weight is q.weight()
        assert torch.equal(w, exact)
        # bit for bit, but for the sign of zeros: pruned weights are +0.0, codebook[i] * False may be -0.0
        assert bool(((w.view(torch.int32) == exact.view(torch.int32)) | (exact == 0)).all())
    state = loaded.state_dict()
    for key, t in others.items():
        assert torch.equal(state[key], t) and state[key].dtype == t.dtype
    original.eval(), loaded.eval()
    x = torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.equal(original(x), loaded(x))


@pytest.fixture(scope="module")
def small_file():
    """LeNet-300-100 with 3 classes, 3 % kept: a ~15 KB file for the exhaustive corruption tests."""
    torch.manual_seed(0)
    model = models.create("lenet300", 3, 1, 28)
    layers, others = quantize(model, 0.03)
    blob = F.encode_file(model.create_args, layers, others, {"class_names": ["a", "b", "c"]},
                         sync_interval=64,  # many short lanes: every decode is quick
                         coders=("huffman", "rans"))  # streams; tests/test_cabac.py: context-coded layers
    return model, layers, others, blob


from forge import edited, frame, join, split  # noqa: E402  (the forged-file generators)


# ----------------------------------------------------------------------------- sparse layout
def test_gap_layout_inserts_fillers_like_figure_2():
    # 5-bit gaps: M = 31. Position 100 is 100 after the start (-1): three fillers (93), then 6.
    symbols = F.gap_encode(np.array([100]), 5)
    assert symbols.tolist() == [31, 31, 31, 7]
    assert F.gap_decode(symbols, 5, 101, 1).tolist() == [100]


@pytest.mark.parametrize("positions, g, numel", [
    ([], 5, 10),                            # empty mask
    (list(range(40)), 5, 40),               # full mask: all gaps 0
    ([0], 3, 1), ([6], 3, 7), ([7], 3, 8), ([13], 3, 20), ([14], 3, 20),  # around M and 2M (M=7)
    ([5000], 5, 6000),                      # first position far from 0: 161 fillers in a row
    ([0, 31, 62, 93, 1000, 1001], 5, 1002),
    ([0, 1, 2], 1, 3), ([3, 9], 1, 10),     # 1-bit gaps: every skipped position is a filler
    ([70000], 16, 70001),
])
def test_gap_round_trip(positions, g, numel):
    positions = np.array(positions, dtype=np.int64)
    symbols = F.gap_encode(positions, g)
    assert symbols.size == 0 or symbols.max() < 1 << g
    np.testing.assert_array_equal(F.gap_decode(symbols, g, numel, positions.size), positions)


def test_gap_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for g in (2, 5, 8):
        for density in (0.001, 0.05, 0.5, 0.99):
            mask = rng.random(20000) < density
            positions = np.flatnonzero(mask)
            back = F.gap_decode(F.gap_encode(positions, g), g, mask.size, positions.size)
            np.testing.assert_array_equal(back, positions)


def test_gap_decode_rejects_what_encode_never_writes():
    with pytest.raises(ValueError):
        F.gap_decode(np.array([3, 31], dtype=np.uint16), 5, 100, 1)  # trailing filler
    with pytest.raises(ValueError):
        F.gap_decode(np.array([3, 4], dtype=np.uint16), 5, 100, 1)  # survivor count
    with pytest.raises(ValueError):
        F.gap_decode(np.array([31, 31, 31, 30], dtype=np.uint16), 5, 100, 1)  # past the end


# ----------------------------------------------------------------------------- round trips
def test_plain_data_round_trip_is_bit_exact(tmp_path):
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(7, 300, generator=gen) < 0.2
    big = F.MAX_MAGNITUDE  # the largest magnitude stored; NaN, inf and larger values: refused
    codebook = torch.tensor([-0.0, 0.0, big, -1.5, -big, 1e-40], dtype=torch.float32)
    layers = {
        "fc": QuantizedLayer(codebook, torch.randint(6, (7, 300), generator=gen), mask, 3),
        "empty": QuantizedLayer(torch.zeros(0), torch.zeros(4, 5, dtype=torch.int64),
                                torch.zeros(4, 5, dtype=torch.bool), 2),
        "full": QuantizedLayer(torch.tensor([0.5]), torch.zeros(2, 3, 3, 3, dtype=torch.int64),
                               torch.ones(2, 3, 3, 3, dtype=torch.bool), 1),
    }
    others = {"b16": torch.randn(5, generator=gen).bfloat16(), "flag": torch.tensor([True, False]),
              "steps": torch.tensor(7), "h": torch.randn(2, 2, generator=gen).half()}
    path = tmp_path / "plain.dcz"
    size = F.save_compressed(path, {"name": "x"}, layers, others, {"mean": [0.5], "std": [0.25]},
                             gap_bits={"fc": 3})
    assert size == path.stat().st_size
    got = F.read_compressed(path)
    assert got.create_args == {"name": "x"} and got.metadata == {"mean": [0.5], "std": [0.25]}
    assert list(got.layers) == list(layers)
    for name in ("fc", "full"):
        assert_same_layers(layers[name], got.layers[name])
    assert got.layers["empty"].codebook.numel() == 0 and not got.layers["empty"].mask.any()
    for key, t in others.items():
        assert t.dtype == got.other_tensors[key].dtype and torch.equal(t, got.other_tensors[key])
    assert F.parse(path.read_bytes()).header["layers"][0]["gap_bits"] == 3


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_lenet_round_trip(tmp_path, name):
    torch.manual_seed(0)
    model = models.create(name, 10, 1, 28)
    layers, others = quantize(model, 0.08)
    path = tmp_path / "m.dcz"
    F.save_compressed(path, model.create_args, layers, others, {"class_names": [str(i) for i in range(10)]})
    got = F.read_compressed(path)
    for key, q in layers.items():
        assert_same_layers(q, got.layers[key])
    for quantized in (True, False):
        loaded = F.load_compressed(path, quantized=quantized)
        assert loaded.create_args == model.create_args and loaded.metadata["class_names"][0] == "0"
        assert_same_model(model, loaded, layers, others, 1, 28)
        first = next(iter(models.compressible_layers(loaded).values()))
        assert (first.parametrizations.weight.original if quantized else first.weight).requires_grad


@pytest.mark.parametrize("name, classes, size, density, paths",
                         [("alexnet", 23, 63, 0.05, (True,)), ("vgg16", 23, 32, 0.02, (True, False))])
def test_big_round_trip(tmp_path, name, classes, size, density, paths):
    model, layers, others = sparse_model(name, classes, 3, size, density)
    path = tmp_path / f"{name}.dcz"
    F.save_compressed(path, model.create_args, layers, others, {})
    for quantized in paths:  # the quantized path installs from the survivors: no dense int64 indices
        assert_same_model(model, F.load_compressed(path, quantized=quantized), layers, others, 3, size)
    assert F.size_report(path)[-1]["compression_ratio"] > 30


def pruned_quantized_lenet5(quantile):
    """LeNet-5 with the weights below each layer's ``quantile`` of |w| pruned, quantized 8/5 bits."""
    from helpers.quantize.quantization import quantize_model

    torch.manual_seed(0)
    model = models.create("lenet5", 10, 1, 28)
    with torch.no_grad():
        for m in models.compressible_layers(model).values():
            m.weight.mul_(m.weight.abs() >= m.weight.abs().quantile(quantile))
    quantize_model(model, conv_bits=8, fc_bits=5, seed=0)
    return model


def bits_of(t):
    """A tensor's bytes, for bit-for-bit comparison of any dtype (signed zeros and NaNs included)."""
    return t.detach().reshape(-1).contiguous().view(torch.uint8)


def assert_identical_models(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and sa[key].shape == sb[key].shape, key
        assert torch.equal(bits_of(sa[key]), bits_of(sb[key])), key
    for (name, m), n in zip(models.compressible_layers(a).items(), models.compressible_layers(b).values()):
        assert torch.equal(bits_of(m.weight), bits_of(n.weight)), name
    a.eval(), b.eval()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(bits_of(a(x)), bits_of(b(x)))


def test_quantized_load_from_survivors_equals_the_dense_path_bit_for_bit(tmp_path, monkeypatch):
    from helpers.quantize.quantization import import_quantized

    torch.manual_seed(0)
    model = models.create("lenet5", 10, 1, 28)
    layers, others = quantize(model, 0.1)
    layers["features.0"].codebook[3] = float("nan")  # unusual values survive bit for bit
    layers["classifier.3"].codebook[1] = -0.0
    path = tmp_path / "m.dcz"
    F.save_compressed(path, model.create_args, layers, others, {"image_size": 28})
    # the dense path: plain weights, then import_quantized of dense int64 QuantizedLayers
    got = F.read_compressed(path)
    slow = models.create(**got.create_args)
    slow.load_state_dict({**got.other_tensors, **{f"{n}.weight": q.weight() for n, q in got.layers.items()}})
    import_quantized(slow, got.layers)

    def refuse(*args):
        raise AssertionError("the quantized load path built a dense tensor")

    monkeypatch.setattr(F.SparseLayer, "dense", refuse)
    monkeypatch.setattr(F.SparseLayer, "to_quantized", refuse)
    fast = F.load_compressed(path)
    monkeypatch.undo()
    assert_identical_models(fast, slow)
    fast_layers, slow_layers = models.compressible_layers(fast), models.compressible_layers(slow)
    for (name, m), n in zip(fast_layers.items(), slow_layers.values()):
        w, mask = m.weight, layers[name].mask
        assert not bits_of(w[~mask]).any(), name  # +0.0 where pruned
        assert torch.equal(bits_of(w[mask]), bits_of(layers[name].weight()[mask])), name
        positions, labels = m.parametrizations.weight[0].survivors()
        n.parametrizations.weight[0]._labels = None  # recompute the slow model's from its buffers
        recomputed = n.parametrizations.weight[0].survivors()
        assert torch.equal(positions, recomputed[0]) and torch.equal(labels, recomputed[1]), name
        assert labels.dtype == torch.int64 and m.parametrizations.weight.original.requires_grad
    assert fast.metadata == {"image_size": 28}
    plain = F.load_compressed(path, quantized=False)
    for name, m in models.compressible_layers(plain).items():
        assert not parametrize.is_parametrized(m)
        assert torch.equal(m.weight, models.compressible_layers(fast)[name].weight), name


def test_a_loaded_model_fine_tunes_and_saves_to_identical_files(tmp_path):
    from helpers.quantize.quantization import export_quantized, load_quantized_state_dict

    model = pruned_quantized_lenet5(quantile=0.8)
    first, again = tmp_path / "first.dcz", tmp_path / "again.dcz"
    helpers.save_compressed(model, first, metadata={"image_size": 28})
    loaded = F.load_compressed(first)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    helpers.save_compressed(loaded, again, metadata=loaded.metadata)
    assert again.read_bytes() == first.read_bytes()

    zeros = {n: m.weight.detach() == 0 for n, m in models.compressible_layers(loaded).items()}
    before = {n: q.codebook.clone() for n, q in export_quantized(loaded).items()}
    opt = torch.optim.SGD(loaded.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    loaded.train()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(loaded(x), y).backward()
        for name, m in models.compressible_layers(loaded).items():
            assert m.parametrizations.weight.original.grad.abs().sum() > 0, name
        opt.step()
    after = export_quantized(loaded)
    assert all(not torch.equal(before[n], after[n].codebook) for n in before)
    for name, m in models.compressible_layers(loaded).items():
        assert torch.equal(m.weight.detach() == 0, zeros[name]), name  # pruned weights stay pruned

    tuned, retuned = tmp_path / "tuned.dcz", tmp_path / "retuned.dcz"
    helpers.save_compressed(loaded, tuned, metadata=loaded.metadata)
    reloaded = F.load_compressed(tuned)
    assert_identical_models(reloaded, loaded)
    helpers.save_compressed(reloaded, retuned, metadata=reloaded.metadata)
    assert retuned.read_bytes() == tuned.read_bytes()
    buf = io.BytesIO()  # and the torch checkpoint route
    torch.save(reloaded.state_dict(), buf)
    buf.seek(0)
    fresh = models.create("lenet5", 10, 1, 28)
    load_quantized_state_dict(fresh, torch.load(buf, weights_only=True))
    assert_identical_models(fresh, loaded)


def test_quantized_model_save_and_load_through_the_package(tmp_path):
    model = pruned_quantized_lenet5(quantile=0.9)
    path = tmp_path / "lenet5.dcz"
    helpers.save_compressed(model, path, metadata={"image_size": 28})
    loaded = helpers.load_compressed(path)
    assert model.state_dict().keys() == loaded.state_dict().keys()
    renumbered = (".parametrizations.weight.original", ".parametrizations.weight.0.indices")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        if not k.endswith(renumbered):  # codebooks lose their unused entries, indices follow
            assert torch.equal(a, b), k
    from helpers.quantize.quantization import export_quantized

    ours, theirs = export_quantized(model), export_quantized(loaded)
    assert list(ours) == list(theirs)
    for name, q in ours.items():
        assert_same_layers(q, theirs[name])
        assert torch.equal(models.compressible_layers(model)[name].weight,
                           models.compressible_layers(loaded)[name].weight), name
    assert any(theirs[n].codebook.numel() < q.codebook.numel() for n, q in ours.items())
    x = torch.randn(3, 1, 28, 28)
    model.eval(), loaded.eval()
    assert torch.equal(model(x), loaded(x))
    assert loaded.metadata == {"image_size": 28}


def test_size_report(small_file, tmp_path):
    model, layers, others, blob = small_file
    path = tmp_path / "s.dcz"
    path.write_bytes(blob)
    rows = F.size_report(path)
    assert [r["layer"] for r in rows] == [*layers, "total"]
    total = rows[-1]
    assert total["file_bytes"] == len(blob)
    assert total["dense_fp32_bytes"] == 4 * models.count_parameters(model)
    assert total["compression_ratio"] == pytest.approx(total["dense_fp32_bytes"] / len(blob))
    for r, q in zip(rows, layers.values()):
        assert r["weights"] == q.mask.numel()
        assert r["kept_pct"] == pytest.approx(100 * q.mask.sum().item() / q.mask.numel())
        assert r["weight_bits_pq"] == q.bits and r["index_bits_pq"] == 5
        assert 0 < r["compress_pqh_pct"] and r["compress_pq_pct"] < 100
        if q.mask.sum() > 1000:  # code tables make Huffman a loss on a tiny layer
            assert r["compress_pqh_pct"] < r["compress_pq_pct"]
    # every byte is accounted for: layers as stored, raw tensors, and the header and framing
    assert sum(r["stored_bytes"] for r in rows[:-1]) + total["raw_tensor_bytes"] + total["header_bytes"] \
        == len(blob)
    header = F.parse(blob).header
    for r, d in zip(rows, header["layers"]):
        cb = d["codebook"]["length"]  # the stored codebook (used entries), in both columns
        if "cabac" in d:  # one stream for both: the indices' share is what their decisions cost
            assert r["stored_bytes"] == cb + d["cabac"]["data"]["length"]
            assert 0 < r["weight_bits_pqh"] < r["weight_bits_pq"] + 1 and r["index_bits_pqh"] > 0
            continue
        assert 8 * r["index_entropy_bytes"] <= r["weight_bits_pqh"] * d["survivors"]  # order-0 streams
        assert r["stored_bytes"] == cb + sum(d[k][s]["length"] for k in ("index", "gap")
                                             for s in ("lengths", "model", "sync", "data") if s in d[k])
        assert r["compress_pq_pct"] * 32 * r["weights"] / 100 == pytest.approx(
            d["survivors"] * d["bits"] + d["gap"]["count"] * d["gap_bits"] + 8 * cb)
    same = ("layer", "weights", "kept_pct", "weight_bits_pq", "index_bits_pq", "compress_pq_pct",
            "index_entropy_bytes", "gap_entropy_bytes")  # the fixture's sync interval is not the default
    in_memory = F.size_report(layers, others)
    assert [[r[k] for k in same] for r in rows[:-1]] == [[r[k] for k in same] for r in in_memory[:-1]]


# ----------------------------------------------------------------------------- hostile files
def test_every_truncation_raises(small_file):
    blob = small_file[3]
    assert len(blob) < 20000
    F.parse(blob)
    for n in range(len(blob)):
        with pytest.raises(CompressedFileError):
            F.parse(blob[:n])


def test_every_bit_flip_in_the_first_kilobyte_raises(small_file):
    blob = bytearray(small_file[3])
    for i in range(1024 * 8):
        blob[i // 8] ^= 1 << (i % 8)
        with pytest.raises(CompressedFileError):
            F.parse(bytes(blob))
        blob[i // 8] ^= 1 << (i % 8)
    rng = np.random.default_rng(0)
    tail = range((len(blob) - 8) * 8, len(blob) * 8)  # the end marker and the file CRC
    for i in [*tail, *rng.integers(1024 * 8, len(blob) * 8, 300)]:  # and a sample of the rest
        blob[i // 8] ^= 1 << (i % 8)
        with pytest.raises(CompressedFileError):
            F.parse(bytes(blob))
        blob[i // 8] ^= 1 << (i % 8)


def test_damaged_data_with_valid_crcs_never_raises_anything_else(small_file):
    """CRCs recomputed after each flip: the decoder's own checks must hold the line."""
    header, data = split(small_file[3])
    rng = np.random.default_rng(1)
    outcomes = set()
    for i in rng.integers(0, len(data) * 8, 200):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            F.parse(join(json.loads(json.dumps(header)), bad))
            outcomes.add("decoded")  # e.g. a flipped codebook value is still a valid file
        except CompressedFileError:
            outcomes.add("rejected")
    assert "rejected" in outcomes


def _set(path, value):
    def edit(header, data):
        obj = header
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return edit


HUFFMAN_LAYER, RANS_LAYER = 2, 0  # the small file's fc3 streams are Huffman-coded, fc1's rANS


def test_the_small_file_holds_both_coders(small_file):
    layers = F.parse(small_file[3]).header["layers"]
    assert {layers[HUFFMAN_LAYER][k]["coder"] for k in ("index", "gap")} == {"huffman"}
    assert {layers[RANS_LAYER][k]["coder"] for k in ("index", "gap")} == {"rans"}


def _section_byte(layer, key, section, value, at=0):
    def edit(header, data):
        data[header["layers"][layer][key][section]["offset"] + at] = value
    return edit


HOSTILE = {
    "10**12 gap symbols": _set(("layers", 0, "gap", "count"), 10 ** 12),
    "10**12 index symbols": _set(("layers", 0, "index", "count"), 10 ** 12),
    "more survivors than weights": _set(("layers", 0, "survivors"), 10 ** 9),
    "huge shape": _set(("layers", 0, "shape"), [10 ** 6, 10 ** 6]),
    "negative shape": _set(("layers", 0, "shape"), [-300, -784]),
    "float shape": _set(("layers", 0, "shape"), [300.0, 784]),
    "negative offset": _set(("layers", 0, "codebook", "offset"), -4),
    "huge length": _set(("layers", 1, "codebook", "length"), 10 ** 12),
    "overlapping sections": _set(("layers", 1, "codebook", "offset"), 0),
    "sync interval 0": _set(("sync_interval",), 0),
    "sync interval huge": _set(("sync_interval",), 10 ** 9),
    "bits 40": _set(("layers", 0, "bits"), 40),
    "gap bits 0": _set(("layers", 0, "gap_bits"), 0),
    "pairs flag on a rANS stream": _set(("layers", RANS_LAYER, "index", "pairs"), True),
    "pickle dtype": _set(("tensors", 0, "dtype"), "object"),
    "tensor shape": _set(("tensors", 0, "shape"), [10 ** 9]),
    "layers not a list": _set(("layers",), {"a": 1}),
    "no layers": lambda h, d: h.pop("layers"),
    "wrong data size": _set(("data_bytes",), 5),
    "unclaimed bytes": lambda h, d: (d.extend(bytes(4)), h.__setitem__("data_bytes", h["data_bytes"] + 4)),
    # rANS streams (version 3)
    "unknown coder": _set(("layers", RANS_LAYER, "gap", "coder"), "lzma"),
    "coder missing": lambda h, d: h["layers"][RANS_LAYER]["gap"].pop("coder"),
    "Huffman coder named on a rANS stream": _set(("layers", RANS_LAYER, "gap", "coder"), "huffman"),
    "rANS coder named on a Huffman stream": _set(("layers", HUFFMAN_LAYER, "gap", "coder"), "rans"),
    "rANS count too large": _set(("layers", RANS_LAYER, "gap", "count"), 10 ** 12),
    "rANS count off by one": lambda h, d: h["layers"][0]["gap"].__setitem__("count", h["layers"][0]["gap"]["count"] + 1),
    "rANS model precision 40": _section_byte(RANS_LAYER, "gap", "model", 40),
    "rANS model rows do not sum": _section_byte(RANS_LAYER, "index", "model", 0x7F, at=4),
    "rANS lane table": _section_byte(RANS_LAYER, "gap", "sync", 0xFF, at=1),
    "rANS data shortened": lambda h, d: h["layers"][0]["gap"]["data"].__setitem__(
        "length", h["layers"][0]["gap"]["data"]["length"] - 2),
    "rANS state zeroed": lambda h, d: d.__setitem__(slice(h["layers"][0]["gap"]["data"]["offset"],
                                                          h["layers"][0]["gap"]["data"]["offset"] + 2), b"\0\0"),
    "lane_symbols 0": _set(("lane_symbols",), 0),
    "lane_symbols huge": _set(("lane_symbols",), 1 << 16),
    "lane_symbols missing": lambda h, d: h.pop("lane_symbols"),
    "lane_symbols changed": _set(("lane_symbols",), 63),
}


HUFFMAN_HOSTILE = {  # on a file of Huffman-coded streams only
    "huge stream": _set(("layers", 0, "gap", "nbits"), 10 ** 15),
    "code lengths over the cap": lambda h, d: (h["layers"][0]["gap"].__setitem__("length_bits", 8),
                                               d.__setitem__(h["layers"][0]["gap"]["lengths"]["offset"], 17)),
    "code lengths 5 bits wide": _set(("layers", 0, "gap", "length_bits"), 5),
    "code-length width missing": lambda h, d: h["layers"][0]["index"].pop("length_bits"),
    "over-full code": lambda h, d: d.__setitem__(slice(h["layers"][0]["gap"]["lengths"]["offset"],
                                                       h["layers"][0]["gap"]["lengths"]["offset"] + 3), b"\1\1\1"),
    "sync table": _section_byte(0, "index", "sync", 0),
    "stream one bit short": lambda h, d: h["layers"][0]["index"].__setitem__("nbits", h["layers"][0]["index"]["nbits"] - 1),
    "pairs flag flipped": lambda h, d: (h["layers"][0]["index"].__setitem__("pairs", True),
                                             h["layers"][0].__setitem__("bits", 9)),
}


@pytest.mark.parametrize("edit", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_headers_with_valid_crcs_raise(small_file, edit):
    with pytest.raises(CompressedFileError):
        F.parse(edited(small_file[3], edit))


@pytest.fixture(scope="module")
def huffman_file(small_file):
    model, layers, others, _ = small_file
    return F.encode_file(model.create_args, layers, others, {}, sync_interval=64, coders=("huffman",))


@pytest.mark.parametrize("edit", list(HUFFMAN_HOSTILE.values()), ids=list(HUFFMAN_HOSTILE))
def test_hostile_huffman_streams_raise(huffman_file, edit):
    F.parse(huffman_file)
    with pytest.raises(CompressedFileError):
        F.parse(edited(huffman_file, edit))


@pytest.mark.parametrize("version", [1, 2])
def test_hostile_json_raises(small_file, version):
    blob = small_file[3]
    hlen = struct.unpack("<I", blob[12:16])[0]
    text = zlib.decompress(blob[16:16 + hlen]).decode()
    data = blob[20 + hlen:-8]
    assert F.parse(frame(zlib.compress(text.encode()), data)).header["layers"]  # the frame is right
    for bad in ('{"data_bytes":0,' + text[1:],                     # duplicate key
                text.replace('"metadata":{', '"metadata":{"x":NaN,'),  # NaN
                text.replace('"metadata":{', '"metadata":{"x":' + "[" * 100000 + "]" * 100000 + ","),
                text[:-1],                                          # cut short
                "[]", '"deep-compression"', text.replace('"format":"deep-compression"', '"format":"x"'),
                text.replace('"format"', '"\udcff"').encode("utf-8", "surrogatepass")):  # not UTF-8
        h = bad if isinstance(bad, bytes) else bad.encode()
        with pytest.raises(CompressedFileError):
            F.parse(frame(zlib.compress(h) if version == 2 else h, data, version))


def test_header_is_compact_deflated_json(small_file):
    blob = small_file[3]
    version, _, hlen = struct.unpack("<HHI", blob[8:16])
    text = zlib.decompress(blob[16:16 + hlen])
    assert version == F.VERSION == 6 and hlen < len(text) / 2
    assert text == json.dumps(json.loads(text), separators=(",", ":")).encode()  # no spaces


def bomb(size, prefix=b"{"):
    """A zlib stream inflating to ``prefix`` + ``size`` spaces (valid JSON whitespace, so only the
    size limit can refuse it), deflated in 1 MiB pieces: 1000x smaller than its output."""
    z, chunk, out = zlib.compressobj(9), b" " * (1 << 20), [b""]
    out.append(z.compress(prefix))
    for _ in range(size >> 20):
        out.append(z.compress(chunk))
    out.append(z.compress(b" " * (size % (1 << 20))))
    return b"".join(out) + z.flush()


def test_a_header_inflating_past_the_limit_is_refused(small_file, monkeypatch):
    import tracemalloc

    blob = small_file[3]
    hlen = struct.unpack("<I", blob[12:16])[0]
    text, data = zlib.decompress(blob[16:16 + hlen]), blob[20 + hlen:-8]
    padded = lambda n: frame(zlib.compress(text[:1] + b" " * n + text[1:]), data)  # noqa: E731
    # with the real limit: a header 64 MiB of JSON whitespace long
    with pytest.raises(CompressedFileError, match="inflates"):
        F.parse(frame(bomb(F.MAX_HEADER_BYTES), data))
    # at a small limit: up to the limit is fine, one byte more is not
    monkeypatch.setattr(fileformat_read, "MAX_HEADER_BYTES", len(text) + 100)
    F.parse(padded(99))
    with pytest.raises(CompressedFileError, match="inflates"):
        F.parse(padded(100))
    # a bomb 256x the limit is refused having inflated no more than the limit
    monkeypatch.setattr(fileformat_read, "MAX_HEADER_BYTES", 1 << 18)
    bad = frame(bomb(64 << 20), data)
    tracemalloc.start()
    try:
        with pytest.raises(CompressedFileError, match="inflates"):
            F.parse(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(bad) + 4 * (1 << 18)


def test_a_header_that_is_not_one_whole_zlib_stream_is_refused(small_file):
    blob = small_file[3]
    hlen = struct.unpack("<I", blob[12:16])[0]
    packed, data = blob[16:16 + hlen], blob[20 + hlen:-8]
    rng = np.random.default_rng(2)
    bad_checksum = bytearray(packed)
    bad_checksum[-1] ^= 1
    for garbage in (rng.bytes(hlen), rng.bytes(7), b"", b"\x78", bytes(hlen),
                    packed[:-1], packed[:len(packed) // 2],   # cut short
                    packed + b"\0", packed + packed,          # stray bytes after the stream
                    bytes(bad_checksum),                      # its adler32 fails
                    zlib.decompress(packed)):                 # plain JSON in a version-2 file
        with pytest.raises(CompressedFileError):
            F.parse(frame(garbage, data))  # header and file CRCs valid: only the inflater objects


# A version-1 file (plain JSON header, byte-per-symbol code tables, all 8 codebook entries though
# two are unused) written by the version-1 writer: a 4x6 layer, bits 3, gap bits 3, and a bias.
V1_FILE = (
    "iURDWg0KGgoBAAAA5gIAAHsiZm9ybWF0IjoiZGVlcC1jb21wcmVzc2lvbiIsInZlcnNpb24iOjEsImNyZWF0ZV9hcmdzIjp7"
    "Im5hbWUiOiJ4In0sIm1ldGFkYXRhIjp7ImsiOlsxLDJdfSwic3luY19pbnRlcnZhbCI6MjA0OCwiZGF0YV9ieXRlcyI6NjUs"
    "ImxheWVycyI6W3sibmFtZSI6ImZjIiwic2hhcGUiOls0LDZdLCJiaXRzIjozLCJnYXBfYml0cyI6Mywic3Vydml2b3JzIjo4"
    "LCJjb2RlYm9vayI6eyJvZmZzZXQiOjAsImxlbmd0aCI6MzIsImNyYzMyIjo3NTczMjM4Njh9LCJpbmRleCI6eyJjb3VudCI6"
    "OCwicGFpcnMiOmZhbHNlLCJuYml0cyI6MjAsImxlbmd0aHMiOnsib2Zmc2V0IjozMiwibGVuZ3RoIjo3LCJjcmMzMiI6Nzk2"
    "MDUwNjg4fSwic3luYyI6eyJvZmZzZXQiOjM5LCJsZW5ndGgiOjAsImNyYzMyIjowfSwiZGF0YSI6eyJvZmZzZXQiOjM5LCJs"
    "ZW5ndGgiOjMsImNyYzMyIjoxNjk4ODQ4ODAxfX0sImdhcCI6eyJjb3VudCI6OCwicGFpcnMiOmZhbHNlLCJuYml0cyI6MTUs"
    "Imxlbmd0aHMiOnsib2Zmc2V0Ijo0MiwibGVuZ3RoIjo1LCJjcmMzMiI6MTM3OTYxOTc4OH0sInN5bmMiOnsib2Zmc2V0Ijo0"
    "NywibGVuZ3RoIjowLCJjcmMzMiI6MH0sImRhdGEiOnsib2Zmc2V0Ijo0NywibGVuZ3RoIjoyLCJjcmMzMiI6NDAwODQ5MjIx"
    "M319fV0sInRlbnNvcnMiOlt7Im5hbWUiOiJmYy5iaWFzIiwiZHR5cGUiOiJmbG9hdDMyIiwic2hhcGUiOls0XSwib2Zmc2V0"
    "Ijo0OSwibGVuZ3RoIjoxNiwiY3JjMzIiOjEyOTI5ODY0MjR9XX0HLm4/AADAvwAAgL4AAAAAAAAAPwAAAEAAAMB/AABQQAAA"
    "AIACAwADAgMDVFwOAQADAgOmdAAAAD4AAADAAADgQG8SgzpEQ1pFQFOC+A==")


def v1_layer():
    codebook = torch.tensor([-1.5, -0.25, 0.0, 0.5, 2.0, float("nan"), 3.25, -0.0])
    indices = torch.tensor([[0, 1, 2, 3, 4, 5], [6, 7, 0, 1, 2, 3], [4, 5, 6, 7, 0, 1], [2, 3, 4, 5, 6, 7]])
    mask = torch.tensor([[1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0]],
                        dtype=torch.bool)
    return QuantizedLayer(codebook, indices, mask, 3)


def v1_file_without_nan():
    """V1_FILE with its NaN codebook entry (which readers now refuse) set to 9.5, CRCs made valid."""
    import base64

    blob = base64.b64decode(V1_FILE)
    hlen = struct.unpack("<I", blob[12:16])[0]
    header, data = json.loads(blob[16:16 + hlen]), bytearray(blob[20 + hlen:-8])
    section = header["layers"][0]["codebook"]
    data[section["offset"] + 20:section["offset"] + 24] = struct.pack("<f", 9.5)
    section["crc32"] = zlib.crc32(bytes(data[section["offset"]:section["offset"] + section["length"]]))
    return blob, frame(json.dumps(header, separators=(",", ":")).encode(), data, version=1)


def test_version_1_files_still_read_and_rewrite_as_the_current_version(tmp_path):
    original, blob = v1_file_without_nan()
    with pytest.raises(CompressedFileError, match="NaN"):
        F.parse(original)
    assert struct.unpack("<H", blob[8:10])[0] == 1
    path = tmp_path / "v1.dcz"
    path.write_bytes(blob)
    got = F.read_compressed(path)
    q = v1_layer()
    q.codebook[5] = 9.5
    assert got.create_args == {"name": "x"} and got.metadata == {"k": [1, 2]}
    assert torch.equal(got.layers["fc"].codebook.view(torch.int32), q.codebook.view(torch.int32))  # as stored
    assert torch.equal(got.layers["fc"].mask, q.mask) and got.layers["fc"].bits == 3
    assert torch.equal(got.layers["fc"].indices[q.mask], q.indices[q.mask])
    assert torch.equal(got.other_tensors["fc.bias"], torch.tensor([0.125, -2.0, 7.0, 1e-3]))
    again = tmp_path / "v3.dcz"
    F.save_compressed(again, got.create_args, got.layers, got.other_tensors, got.metadata, gap_bits=3)
    assert struct.unpack("<H", again.read_bytes()[8:10])[0] == F.VERSION
    assert again.stat().st_size < len(blob)
    new = F.read_compressed(again)
    assert_same_layers(q, new.layers["fc"])
    assert new.layers["fc"].codebook.numel() == 6  # 0.0 and -0.0 (entries 2 and 7) were unused
    with pytest.raises(CompressedFileError, match="version 7"):
        F.parse(blob[:8] + struct.pack("<H", 7) + blob[10:])


# A version-2 file (compressed JSON header, Huffman streams only), written by the version-2 writer
# (git 18bd1a7) from v2_layers() with gap_bits={"fc": 2}, metadata {"k": [1, 2]} and a bias.
V2_FILE = (
    "iURDWg0KGgoCAAAA0wEAAHjajZTbbqMwEIbfxdfelcdjjJ1XWUWRA06KmmCEXdSo4t13nLRAdonEXbBm/sPoU77YKfRXl9iO1d53"
    "v6pw7XofYxNaxtng+/uvneSs6r1L/uD6c2S7L9a6q6elTzZydvXJ1S65/P7Odn+Ayz09x1tbHZo2+X5wF9IQynCW5w7HW/KkAgY4"
    "u7gbudDWpHmqyDq+uc5nLcmV2HN2bBINIWdn1x0eHxQqfvRDM4S8rzRlDLU/hvCeg4TTKXrqJcjCt+f0lhPkGhVKEjKqLLSxSlPQ"
    "pq39Z96pwkebHlKda7LqyV2i56x9OIIof9S+M6if77j0lAtTnDylNBILjab4Ps7TCs4rc0wxPi72ahLU3AgVgDYacBzvV1oUgrJ8"
    "0Ugqu6kRloszTp66lIUtjRIrhdBuLbScxFkcpRWEjDEwUqOJjiq0w4IPxSVHjhMhakmIeSIEzTohJcz+eoEIyhIkhbAriGStdUTU"
    "NkQAF65mMgU0gJo4USsnhe03fRoFOzOopCBMlIX/KXnZSeO2SoVZxR6sRVGiWaMENGyupNcvBiiMzqQQJoRB8m0M//6h/D42LhI1"
    "dbp195dLcIm2Z44yQbPT8ngzkVAUKBRIY8b9+BdoUZUQp84TugAAwL8AAIC+AAAAPwAAAEAAAFBAMiMCHamJW30IG7xftq5Y8gAy"
    "E1wuZAYAgGECDj6wGAgdARwmFBkIXBaAIbKdFiDGAdwBAACAv97dXb+8uzu/mZkZv+7u7r6qqqq+ysxMvoKIiL3KzEw+qqqqPu7u"
    "7j6ZmRk/vLs7P97dXT8AAIA/U0NERFRERATl0+SXkeXNodqhYc921VCdjPMEIQQ0GSTwvDsIijUAAAA+AAAAwAAA4EBEQ1pFgYlL"
    "nQ==")


def v2_layers():
    g = torch.Generator().manual_seed(5)
    codebook = torch.tensor([-1.5, -0.25, 0.5, 2.0, 3.25])
    mask = torch.rand(12, 40, generator=g) < 0.08
    indices = torch.randint(5, (12, 40), generator=g)
    conv_mask = torch.rand(4, 2, 3, 3, generator=g) < 0.5
    conv = QuantizedLayer(torch.linspace(-1, 1, 16), torch.randint(16, (4, 2, 3, 3), generator=g), conv_mask, 4)
    return {"fc": QuantizedLayer(codebook, indices, mask, 3), "conv": conv}


def test_version_2_files_still_read(tmp_path):
    import base64

    blob = base64.b64decode("".join(V2_FILE))
    assert struct.unpack("<H", blob[8:10])[0] == 2
    path = tmp_path / "v2.dcz"
    path.write_bytes(blob)
    got = F.read_compressed(path)
    assert got.create_args == {"name": "x"} and got.metadata == {"k": [1, 2]}
    for name, q in v2_layers().items():
        assert_same_layers(q, got.layers[name])
    assert torch.equal(got.other_tensors["fc.bias"], torch.tensor([0.125, -2.0, 7.0]))
    header = F.parse(blob).header
    assert header["layers"][0]["gap_bits"] == 2 and "coder" not in header["layers"][0]["gap"]
    again = F.encode_file(got.create_args, got.layers, got.other_tensors, got.metadata, gap_bits={"fc": 2})
    assert struct.unpack("<H", again[8:10])[0] == F.VERSION
    for name, q in v2_layers().items():
        assert_same_layers(q, F.parse(again).layers[name].to_quantized())


# A version-3 file (a CRC32 in every section, raw tensors in their own dtype), written by the
# version-3 writer (git 6b1ae9d) with coders=("rans",): rANS streams and a float16 codebook.
V3_FILE = (
    "iURDWg0KGgoDAAAA2gEAAHjajZTbjpswEIbfxddu5bGND7zKKkIGnCzaYEfgjRatePeO05ZDS7sRN2Dm8M0/P3yScxx6l0hJWu9v35rY"
    "3wY/jl0MhJK7Hx53paCkGbxLvnLDZSTlJwmu95j0QWZKep9c65LL52+kfAHKT3g8TqGpupD8cHdXUnImDSVXF3w1Tn0dr1hHMqsoyblV"
    "PSWPJ1ZADpqwM1Za+pwbxBlf3Q0fXiSjwNiJkrpLGFVQcnG3ankY34d7d4+5ADCR0WPr6xjfMl88n0eP4zLs4sMlvZJSyTxdIzgyKs20"
    "EJqZeU2r2jTdHhDX6BIoJOlC6z9yuRwz4KvBhZHklPeQfrft8d1121OrtakwS1MorOJWARS/RNvmAMg1iS05bP4p2z9DBfB1KosXA2B2"
    "nh9a/ZdcHpBLvkGXK4ZmjOvCan5ALpV6lnwXKmHdB3AhkVxiA0Rf3NDEcN/6gXIqqFgMYbaGMDtDCHZsB7WRbqucQkGs4WL+cue58l+6"
    "GbPxmV3HwoUoJbS1B7oZY5/VbRe6GsoWhULJtPpy3cfQVh+LUXBmWKFBH1Bb9jT1LhTWWBBIra3JNp1xmcmHMf75G/hedy4PsPsmMXt1"
    "Q/bB0grs4ShQFIJJ4MbMp/kHBGyAfCbPKIQAwIC/AL+AvgC+gL0AvYC8ALwAuwC6ALkAuAC2ALQAsAAAADAANAA2ADgAOQA6ADsAPIA8"
    "AD2APQA+gD4AP4A/AABAvwAAgD4AAMA/DQAgyCKHDvAFRyg3CC8oKCgoECgYLzAwTzBHGBgwKCgoKBg/MBgEACBC8Fpm7AJT2nNCsnFw"
    "IZaTH/EaudUkpDF/1j2i6RKQ0GxhyzS8P+g8k60WazmNs+n3i1ktAFB4+1DiCh3h/inbcXldHlVLEZdaOrCpjb5djIIKTx1Z12Td11XS"
    "ecnOcF2bVuAQaJV5BWDaHZwOGmIb3yzqbf7E6JTZ2pRAXFMYIMAhutQlh1asDm6jcmyf8o6JCFJAl8fcix0mfjY+ZKrxpSpPZwRjB0Wg"
    "1d1dTZKRJXJcy8k9m3/oWsHyf6TwZAXDyl7rkA+S+vbesEbbBggTIZJ+nkwdfV7O4OcpfOi6XwPXKHku0aHspwTr8BPvfZxsDXvIs8AC"
    "23y6aKR3X8VMeEU5j/BBjBSOmDwbT2A6t45CNiM10CnI76PbLjadYruUJRFOqFm0fIMBp/bamVeEw1DrrfoLACCdBIADsQLmAZoBY1E/"
    "MyIQEBAODAoIBAQCAAAAAAACAAAAAAACAgBd01C0lM/iBrcenFkndIJcjOFm5JFS/GwZvE1J5kUcAtqPqvWo5FbutWSZ952Uj9qdFwLZ"
    "5m1ciL6fzseNxaEozsq7sRDXNpm1rOa5KegEb/oAUxG5j2PQxYRP3j84/no01GeUQHcIQVND9dCK+P9z1g0+GslA1Lz0L6V87fygtfmE"
    "x97P2v/cfH5miRjyg3Ds+EjOSmjL/Rbqv+Yg0UR3WgfHmyxhGLhThw7bR97WkYYZrVEyiAZk2iE5EL50s1aAejIMKXPyHorDqn1eKj8j"
    "9gxEmS0L2v/t7Nh67qveVmtb4K5yoqsOXUxB4GXjF8mOj3bamWFdfKe6JwPr6684BbSDvvLT4lQZUXUZD3Pk3rekHc8Xcbbp9tK8HUri"
    "rPdH5CbZ1u3suUWB+tGkyv048H1NPyKc1ZRow0eTZ3veyLaeT0yh8htH52S+ZJ1ET9kf1yHL55CgNxj9b1NjRTV2sU/PfeuJk8bQRyK7"
    "aER8MYjnazq967hX+BmcylqpQUweRpd7zFAMiF1NNDtGl2i2XaNT5TyTZbTKkCraDwAD712iRO9dTaDJMd8hMIELAAWqBZoD3gOaA0Ty"
    "nbWT+OSWXfrFAAAAPgAAAMAAAOBARENaRc/SzU8=")


def v3_layers():
    g = torch.Generator().manual_seed(7)
    mask = torch.rand(40, 100, generator=g) < 0.25
    probs = torch.tensor([0.55, 0.2, 0.1] + [0.15 / 29] * 29)
    idx = torch.multinomial(probs, 4000, replacement=True, generator=g).view(40, 100)
    conv = QuantizedLayer(torch.tensor([-0.75, 0.25, 1.5]), torch.randint(3, (4, 2, 3, 3), generator=g),
                          torch.rand(4, 2, 3, 3, generator=g) < 0.5, 8)
    return {"fc": QuantizedLayer(torch.arange(32) / 8 - 2, idx, mask, 5), "conv": conv}


def test_version_3_files_still_read(tmp_path):
    import base64

    blob = base64.b64decode("".join(V3_FILE))
    assert struct.unpack("<H", blob[8:10])[0] == 3
    header = F.parse(blob).header
    assert [d["index"]["coder"] for d in header["layers"]] == ["rans", "rans"]
    assert header["layers"][0]["codebook_dtype"] == "float16" and "crc32" in header["layers"][0]["codebook"]
    path = tmp_path / "v3.dcz"
    path.write_bytes(blob)
    got = F.read_compressed(path)
    for name, q in v3_layers().items():
        assert_same_layers(q, got.layers[name])
    assert torch.equal(got.other_tensors["fc.bias"], torch.tensor([0.125, -2.0, 7.0]))
    damaged = bytearray(blob)
    damaged[-40] ^= 1  # a section's byte: its own CRC32 (and the file's) no longer match
    with pytest.raises(CompressedFileError, match="CRC32"):
        F.parse(bytes(damaged))
    again = F.encode_file(got.create_args, got.layers, got.other_tensors, got.metadata, coders=("rans",))
    assert struct.unpack("<H", again[8:10])[0] == F.VERSION and len(again) < len(blob)
    assert "crc32" not in F.parse(again).header["layers"][0]["codebook"]
    assert F.parse(again).header["tensors"][0]["int8_exponent"] == -4, "0.125, -2 and 7 are int8 x 2**-4"


# A version-4 file (no per-section CRC32, int8 biases, Huffman and rANS streams only), written by the
# version-4 writer (git fa82e9d) from v3_layers() with its default coders, a bias and metadata {"k": [1, 2]}.
V4_FILE = (
    "iURDWg0KGgoEAAAAqAEAAHjajZTdjoMgFITfhWt2A0Kt+iqbxqAeW7MKRqip2fjue+iPpZt2653gwHzOgD+kNkOnHMlIBdB/lKbr"
    "B7C2MZpQMsJwfsokJeUAykGuhr0l2Q/RqgNcdCIzJR04VSmn/Pw3yb44jXY4bSdd5o12MIyqJVnEZEJJqzTkduoK0+I+kqUxJX5t"
    "XkwOcCbZbL1oQmfcafGpS8SxB9Xj4EsyyhnbUVI0DlUbSvaqz5eBPQ5jMxq/AWdCILqpoDDm2/OZuraAn8vQBfTeHUgWy/muySs3"
    "9WfH1ijHY7RtdAUnv9ZrBnx1ONZ1p3xApTlqd7PpVeM9a9VaoERfeCKZbG9WV0R5G9sQaBvfiXh8jS8UpNFdwOZLaq/eC87n+RzL"
    "O275glsIHq3ilky8AZc8/Z/8QSC5nJF9ab40egy7pxEVVCzlJ2H5yUP5gj2vPpYBcDSvKdhv9TQmma4KKRFBSNGTjBKx+T+jB8F2"
    "TbkvmeN1BzKR4YF6xizfMYeCFFvF1hxoa/7e7c+iURbJH+6eiILafeH4K0lyOPVGg/++D8RenDYyZN3Nv5k0jBDN34zQAMCAvwC/"
    "gL4AvoC9AL2AvAC8ALsAugC5ALgAtgC0ALAAAAAwADQANgA4ADkAOgA7ADyAPAA9gD0APoA+AD+APwAAQL8AAIA+AADAPyFzeImI"
    "iImIiIeHiIiIeZiYjoE7h54UuRO7oH5eAuRC0ajb/o9T6Nuwk7MfhZEEPvCKqBvcoupSmXANYyEh57KZtYEvnCaMW0QsifgyI1S2"
    "95fXXIOG9rOUvvWKsZPmH3gQo6USoaVNjxH+6wlcx+E4fO6W9DsFBKDTPpF7aPH4DS5u3gjsCIbwlSJfN/crYIHNPiiAxRqw51/s"
    "JNB0QInryJmJLPb35SV0zjh7zf5ewLuV0SE5oQuA7YTxZFFPDumsXugkdWFo15X94XzweBQC+hQTr1ZOCyHSwuVwcMUZftTHhvD8"
    "8iQ7ksCTG/wOb0r5pRbrR+649TEK9Vlw9YqjvkdMldx7zh44e5auelZ3VAMNwIEPyI13MrsPQK7Y6o08qIf8787HL83DVRwjruWX"
    "RMmAfyylJrjn01Ta9K3IF2IB8U+jZyIzVFVld4eImJkAAKAAAKDGXZ9jNr3Z5xIoJBsnxB4WTdDGZ69yngTedHeKBUaZb6UpNCTT"
    "xW72N68MgUxkl77sZs2aIBsN+TTwJemyDsPE4QIJcpqIVZrz4gMlmXOegUECs5pPDfudJDcLvkDO9rpCZye/73Nx4rWKQC6kAhHb"
    "+VCjDCaLsvr8wTgJ/Uv7Hdqv7sQl42p0li42SAvML4+gbGaGfPEzYQWW4H4oEO8lZF/ayPqfeZjBy1DB7zELQQi8/kJ8kR9zJ5BX"
    "mCQ7lb1l6QYm5Ogg2SutNbtr4oftybEADBmoZsF3blu2xyGZls1K5didznGd9epJlnTm0dw3wDwnSDvgiSkUdNzi1KzowjCZW1fh"
    "iRfLivR3McE4SnbmEy0H6DBKcLH8/m+WVQvrPU8qkIWMz8ZDBJFAFJ2VAfoeavbNTRdtZ7Bbfsz26w4tuJWTL7Vr9rEpuohFSFgA"
    "qJ7HcR0/3POC0y4iddJIOr++I3d+AA4spv58qUmboYCY/bBBoUm08Fkpvh9HgvDsrDPJqv9CY90YbsNRm7nNWmOup/5pYwTIGOUK"
    "lQohArl7E3S67QEiMgPiILuxmiMaDAEC4HBEQ1pF13ELHw=="
)


def test_version_4_files_still_read():
    import base64

    blob = base64.b64decode("".join(V4_FILE))
    assert struct.unpack("<H", blob[8:10])[0] == 4
    got = F.parse(blob)
    assert all("cabac" not in d for d in got.header["layers"])
    for name, q in v3_layers().items():
        assert_same_layers(q, got.layers[name].to_quantized())
    assert torch.equal(got.tensors["fc.bias"], torch.tensor([0.125, -2.0, 7.0]))
    layers = {name: s.to_quantized() for name, s in got.layers.items()}
    again = F.encode_file(got.header["create_args"], layers, got.tensors, got.header["metadata"])
    assert struct.unpack("<H", again[8:10])[0] == F.VERSION == 6
    assert "cabac" in F.parse(again).header["layers"][0] and len(again) < len(blob)
    streams = F.encode_file(got.header["create_args"], layers, got.tensors, got.header["metadata"],
                            coders=("huffman", "rans"))
    data = [b[20 + struct.unpack("<I", b[12:16])[0]:-8] for b in (streams, blob)]
    assert data[0] == data[1], "without cabac, the data region is version 4's byte for byte"


@pytest.mark.parametrize("values, exponent", [
    ([0.125, -2.0, 7.0], -4), ([0.0, 0.0], 0), ([127.0, -1.0], 0), ([254.0, 2.0], 1), ([128.0, 1.0], None),
    ([0.1], None), ([1.0, float("nan")], None), ([], None), ([3.0 * 2.0 ** -140], -145), ([-127 * 2.0 ** 100], 100)])
def test_int8_exponent_known_answers(values, exponent):
    assert F.int8_exponent(np.array(values, dtype=np.float32)) == exponent


def test_biases_on_an_int8_grid_are_stored_in_a_byte_each_and_read_back_exactly():
    layers = v3_layers()
    rounded = torch.tensor([0.5, -0.25, 31.75, 0.0, -31.75])  # int8 x 2**-2
    plain = torch.tensor([0.1, -0.2, 0.3, 0.0, 1.0])
    sizes = {}
    for name, bias in (("rounded", rounded), ("plain", plain)):
        blob = F.encode_file({}, layers, {"fc.bias": bias})
        assert torch.equal(F.parse(blob).tensors["fc.bias"].view(torch.int32), bias.view(torch.int32))
        sizes[name] = F.parse(blob).header["tensors"][0]["length"]
    assert sizes == {"rounded": 5, "plain": 20}
    blob = bytearray(F.encode_file({}, layers, {"fc.bias": rounded}))
    header = F.parse(bytes(blob)).header
    header["tensors"][0]["dtype"] = "float64"  # int8 storage is for float32 tensors only
    hz = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    start = 20 + struct.unpack("<I", bytes(blob[12:16]))[0]
    with pytest.raises(CompressedFileError, match="int8 storage of a float64 tensor"):
        F.parse(frame(hz, bytes(blob[start:len(blob) - 8])))


def _with_header(blob: bytes, edit, version=F.VERSION) -> bytes:
    """``blob`` with its header JSON changed by ``edit`` (and the version field set), CRCs valid."""
    header = F.parse(blob).header
    edit(header)
    hz = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    start = 20 + struct.unpack("<I", blob[12:16])[0]
    return frame(hz, blob[start:len(blob) - 8], version)


def test_float32_tensors_exact_in_float16_are_stored_in_two_bytes_and_read_back_to_the_bit():
    layers = v3_layers()
    gen = torch.Generator().manual_seed(0)
    half_exact = torch.randn(40, generator=gen).half().float()
    half_exact[:2] = torch.tensor([-0.0, 65504.0])  # the sign of zero and float16's largest value survive
    plain = half_exact.clone()
    plain[5] += 1e-6  # one value off the float16 grid: the whole tensor stays float32
    sizes = {}
    for name, t in (("half", half_exact), ("plain", plain), ("short", half_exact[:15])):
        blob = F.encode_file({}, layers, {"bn.running_var": t})
        got = F.parse(blob)
        assert got.tensors["bn.running_var"].dtype == torch.float32
        assert torch.equal(got.tensors["bn.running_var"].view(torch.int32), t.view(torch.int32))
        sizes[name] = got.header["tensors"][0]["length"]
        assert ("float16" in got.header["tensors"][0]) == (name == "half")
    assert sizes == {"half": 80, "plain": 160, "short": 60}, "under 16 values the header key costs more"
    int8_exact = torch.arange(-20.0, 20.0) / 4  # int8 x 2**-2 is also float16: the smaller storage wins
    assert F.parse(F.encode_file({}, layers, {"b": int8_exact})).header["tensors"][0]["length"] == 40


@pytest.mark.parametrize("edit, version, message", [
    (lambda h: h["tensors"][0].update(dtype="float64"), F.VERSION, "float16 storage of a float64 tensor"),
    (lambda h: h["tensors"][0].update(float16=1), F.VERSION, "float16 storage of a float32 tensor"),
    (lambda h: h["tensors"][0].update(int8_exponent=0), F.VERSION, "float16 storage of a float32 tensor"),
    (lambda h: None, 5, "float16 storage of a float32 tensor")])
def test_float16_storage_is_refused_where_the_format_does_not_allow_it(edit, version, message):
    weight = torch.randn(33, generator=torch.Generator().manual_seed(1)).half().float()
    blob = F.encode_file({}, v3_layers(), {"bn.weight": weight})
    assert F.parse(blob).header["tensors"][0]["float16"] is True
    with pytest.raises(CompressedFileError, match=message):
        F.parse(_with_header(blob, edit, version))


def test_unused_codebook_entries_are_dropped_and_weights_kept_bit_for_bit(tmp_path):
    gen = torch.Generator().manual_seed(3)
    codebook = torch.randn(256, generator=gen)
    codebook[[7, 200]] = torch.tensor([F.MAX_MAGNITUDE, -0.0])
    mask = torch.rand(20, 3, 5, 5, generator=gen) < 0.1
    indices = torch.tensor([3, 7, 200, 255])[torch.randint(4, mask.shape, generator=gen)]
    layers = {"conv": QuantizedLayer(codebook, indices, mask, 8),
              "pruned": QuantizedLayer(torch.tensor([0.5, 1.0]), torch.ones(3, 4, dtype=torch.int64),
                                       torch.zeros(3, 4, dtype=torch.bool), 4),
              "nothing": QuantizedLayer(torch.zeros(0), torch.zeros(2, 2, dtype=torch.int64),
                                        torch.zeros(2, 2, dtype=torch.bool), 1)}
    path = tmp_path / "c.dcz"
    F.save_compressed(path, {"name": "x"}, layers, {}, {})
    header = F.parse(path.read_bytes()).header
    assert [d["codebook"]["length"] for d in header["layers"]] == [16, 4, 0]
    assert [d["bits"] for d in header["layers"]] == [8, 4, 1]
    got = F.read_compressed(path)
    for name in ("conv", "pruned"):
        assert_same_layers(layers[name], got.layers[name])
    assert got.layers["pruned"].codebook.tolist() == [0.5]  # index 0 still has a value
    assert got.layers["nothing"].codebook.numel() == 0 and not got.layers["nothing"].mask.any()
    assert torch.equal(got.layers["pruned"].weight(), torch.zeros(3, 4))
    # a read layer is already compact: saving it again writes the same bytes
    again = tmp_path / "again.dcz"
    F.save_compressed(again, {"name": "x"}, got.layers, {}, {})
    assert again.read_bytes() == path.read_bytes()


def test_code_length_tables_are_4_bit_unless_a_code_is_16_bits_long(tmp_path):
    fib = [1, 1]
    while len(fib) < 18:
        fib.append(fib[-1] + fib[-2])
    skew = torch.from_numpy(np.random.default_rng(0).permutation(np.repeat(np.arange(18), fib)))
    n = skew.numel()  # 6764 survivors; Huffman would give 17-bit codes, the cap makes them 16
    full = lambda *shape: torch.ones(shape, dtype=torch.bool)  # noqa: E731
    layers = {"skew": QuantizedLayer(torch.randn(18), skew.view(76, 89), full(76, 89), 5),
              "odd": QuantizedLayer(torch.tensor([1.0, 2.0, 3.0]), torch.arange(300).remainder(3).view(10, 30),
                                    full(10, 30), 2)}
    assert n == 76 * 89
    blob = F.encode_file({}, layers, coders=("huffman",))
    p = F.parse(blob)
    skew_d, odd_d = p.header["layers"]
    assert skew_d["index"]["length_bits"] == 8 and skew_d["index"]["lengths"]["length"] == 18
    assert odd_d["index"]["length_bits"] == 4 and odd_d["index"]["lengths"]["length"] == 2  # 3 entries + pad
    assert skew_d["gap"]["length_bits"] == 4 and skew_d["gap"]["lengths"]["length"] == 1  # all gaps 0
    path = tmp_path / "t.dcz"
    path.write_bytes(blob)
    got = F.read_compressed(path)
    for name, q in layers.items():
        assert_same_layers(q, got.layers[name])

    def pad(h, d):  # the odd table's padding entry (symbol 3 of a 3-entry codebook) set to 1
        d[h["layers"][1]["index"]["lengths"]["offset"] + 1] |= 0x10

    with pytest.raises(CompressedFileError, match="pads"):
        F.parse(edited(blob, pad))

    def over_cap(h, d):  # an 8-bit table may say 17
        d[h["layers"][0]["index"]["lengths"]["offset"]] = 17

    with pytest.raises(CompressedFileError):
        F.parse(edited(blob, over_cap))


@pytest.mark.parametrize("args", [{"name": "vgg16", "num_classes": 23, "pretrained": True},
                                  {"name": "resnet50", "num_classes": 3},
                                  {"name": "lenet300", "num_classes": 4, "in_channels": 1, "image_size": 28},
                                  {"name": "lenet300", "num_classes": "3"}, {},
                                  {"name": "lenet300", "num_classes": 10 ** 30},
                                  {"name": "lenet300", "num_classes": 3, "image_size": 10 ** 5}])
def test_model_mismatch_raises(small_file, tmp_path, args):
    path = tmp_path / "m.dcz"
    path.write_bytes(edited(small_file[3], _set(("create_args",), args)))
    F.read_compressed(path)  # the plain data is fine ...
    with pytest.raises(CompressedFileError):
        F.load_compressed(path)  # ... it just is not that model


def test_load_checks_tensor_shapes_and_coverage(small_file, tmp_path):
    path = tmp_path / "m.dcz"
    path.write_bytes(edited(small_file[3], _set(("tensors", 0, "name"), "classifier.9.bias")))
    with pytest.raises(CompressedFileError, match="disagree"):
        F.load_compressed(path)
    path.write_bytes(edited(small_file[3], _set(("tensors", 0, "dtype"), "int32")))
    with pytest.raises(CompressedFileError, match="wants"):
        F.load_compressed(path)


def test_foreign_files_raise(tmp_path):
    checkpoint = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, checkpoint)
    foreign = {"empty": b"", "png": b"\x89PNG\r\n\x1a\n" + bytes(100), "torch": checkpoint.getvalue(),
               "random": np.random.default_rng(0).bytes(5000), "text": b"hello\n" * 100,
               "magic only": F.MAGIC, "future version": F.MAGIC + struct.pack("<HHI", 3, 0, 2) + b"{}" + bytes(12)}
    for name, data in foreign.items():
        path = tmp_path / name
        path.write_bytes(data)
        for reader in (F.read_compressed, F.load_compressed, F.size_report):
            with pytest.raises(CompressedFileError):
                reader(path)


def test_no_pickle_on_the_load_path():
    source = inspect.getsource(F)
    assert "import pickle" not in source and "pickle." not in source and "torch.load" not in source


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_write_leaves_no_temp_file_and_keeps_the_old_file_on_failure(small_file, tmp_path, monkeypatch):
    model, layers, others, blob = small_file
    path = tmp_path / "model.dcz"
    F.save_compressed(path, model.create_args, layers, others)
    assert os.listdir(tmp_path) == ["model.dcz"]
    before = path.read_bytes()

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)  # fails after the temp file is written
    with pytest.raises(OSError):
        F.save_compressed(path, model.create_args, layers, others, {"other": 1})
    monkeypatch.undo()
    with pytest.raises(ValueError):  # fails before anything is written
        F.save_compressed(path, model.create_args, layers, {"x": torch.zeros(2, dtype=torch.complex64)})
    assert os.listdir(tmp_path) == ["model.dcz"] and path.read_bytes() == before


# ----------------------------------------------------------------------------- float16 codebooks
def fp16_layers(values):
    gen = torch.Generator().manual_seed(6)
    codebook = torch.tensor(values, dtype=torch.float32)
    return {"fc": QuantizedLayer(codebook, torch.randint(len(values), (20, 30), generator=gen),
                                 torch.rand(20, 30, generator=gen) < 0.5, 5)}


def test_codebooks_are_float16_when_that_is_exact():
    exact = fp16_layers([i / 8 - 2 for i in range(32)])  # multiples of 1/8: exact in float16
    blob = F.encode_file({}, exact)
    d = F.parse(blob).header["layers"][0]
    assert d["codebook_dtype"] == "float16" and d["codebook"]["length"] == 2 * 32
    assert_same_layers(exact["fc"], F.parse(blob).layers["fc"].to_quantized())
    assert len(F.encode_file({}, exact, codebook_dtype="float32")) > len(blob)
    inexact = fp16_layers([i / 7 - 2 for i in range(32)])
    d = F.parse(F.encode_file({}, inexact)).header["layers"][0]
    assert "codebook_dtype" not in d and d["codebook"]["length"] == 4 * 32


def test_float16_codebooks_on_request_round_the_weights():
    layers = fp16_layers([i / 7 - 2 for i in range(32)])
    got = F.parse(F.encode_file({}, layers, codebook_dtype="float16")).layers["fc"]
    want = layers["fc"].codebook.half().float()
    assert torch.equal(torch.from_numpy(got.codebook), want) and not torch.equal(want, layers["fc"].codebook)
    with pytest.raises(ValueError, match="float16's range"):
        F.encode_file({}, fp16_layers([1e6] * 32), codebook_dtype="float16")
    with pytest.raises(ValueError, match="codebook_dtype"):
        F.encode_file({}, layers, codebook_dtype="int8")


@pytest.mark.parametrize("edit", [_set(("layers", 0, "codebook_dtype"), "float64"),
                                  _set(("layers", 0, "codebook_dtype"), None),
                                  lambda h, d: h["layers"][0].pop("codebook_dtype")])  # 64 B: 16 float32s
def test_bad_codebook_dtypes_raise(edit):
    blob = F.encode_file({}, fp16_layers([i / 8 for i in range(32)]))
    with pytest.raises(CompressedFileError):
        F.parse(edited(blob, edit))


# ----------------------------------------------------------------------------- issue 24: bad input
LENET300 = {"name": "lenet300", "num_classes": 10, "in_channels": 1, "image_size": 28}


def bomb_file(rows, cols, name="bomb", create_args=LENET300):
    """A CRC-valid file declaring one (rows, cols) layer whose weights all survive, with one
    codebook entry: both rANS streams code one symbol at probability 1, so each lane is only its
    4-byte initial state, and 2**28 weights take ~50 KB (issue 24's decompression bomb)."""
    lane, numel = (1 << 16) - 3, rows * cols
    seed = QuantizedLayer(torch.tensor([0.5]), torch.zeros(2, 8, dtype=torch.int64),
                          torch.ones(2, 8, dtype=torch.bool), 1)
    header, data = split(F.encode_file(create_args, {name: seed}, lane_symbols=lane, coders=("rans",)))
    out = bytearray()

    def put(b):
        out.extend(b)
        return {"offset": len(out) - len(b), "length": len(b)}

    def cut(sec):
        return bytes(data[sec["offset"]:sec["offset"] + sec["length"]])

    d, lanes = header["layers"][0], -(-numel // lane)
    d.update(shape=[rows, cols], survivors=numel, codebook=put(cut(d["codebook"])))
    for key in ("index", "gap"):
        s = d[key]
        assert s["coder"] == "rans" and s["data"]["length"] == 4  # one lane: the initial state alone
        s.update(count=numel, model=put(cut(s["model"])), sync=put(struct.pack("<H", 2) * (lanes - 1)),
                 data=put(cut(s["data"]) * lanes))
    header["data_bytes"] = len(out)
    return frame(zlib.compress(json.dumps(header).encode(), 9), out)


def test_the_forged_bomb_is_a_valid_file():
    got = F.parse(bomb_file(3, 70000)).layers["bomb"]  # 4 lanes a stream
    assert got.shape == (3, 70000) and got.positions.size == 210000 and not got.indices.any()


@pytest.mark.parametrize("runtime", ["dense", "sparse"])
@pytest.mark.parametrize("name", ["bomb", "classifier.1"])  # a foreign layer; a layer of the wrong shape
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, runtime, name):
    import time
    import tracemalloc

    path = tmp_path / "bomb.dcz"
    path.write_bytes(bomb_file(16380, 16384, name))
    assert path.stat().st_size < 60_000
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(CompressedFileError, match=f"layer '{name}' .* is not a weight of lenet300"):
            helpers.load_compressed(path, runtime=runtime)
        seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1 and peak < 100 << 20, (seconds, peak)


def _tensor_value(name, value, layer=None):
    """An edit of small_file setting raw tensor ``name``'s first value, or a codebook entry of ``layer``."""
    def edit(header, data):
        entry = next(d["codebook"] if layer else d for d in header["layers" if layer else "tensors"]
                     if d["name"] == (layer or name))
        assert "int8_exponent" not in entry and "codebook_dtype" not in entry  # plain float32
        struct.pack_into("<f", data, entry["offset"], value)
    return edit


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -3e38])
@pytest.mark.parametrize("where", ["bias", "codebook"])
def test_nan_inf_and_huge_stored_values_are_refused(small_file, tmp_path, value, where):
    blob = small_file[3]
    header = split(blob)[0]
    bias = next(d["name"] for d in header["tensors"] if "int8_exponent" not in d)
    edit = _tensor_value(bias, value) if where == "bias" else _tensor_value(None, value, header["layers"][0]["name"])
    path = tmp_path / "bad.dcz"
    path.write_bytes(edited(blob, edit))
    for load in (F.read_compressed, lambda p: helpers.load_compressed(p, runtime="sparse")):
        with pytest.raises(CompressedFileError, match="NaN, infinite or huge"):
            load(path)


def test_nan_batchnorm_statistics_are_refused_by_the_reader_and_the_writer(tmp_path):
    from helpers.export import export
    from helpers.quantize.quantization import quantize_model

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(8, 3))
    quantize_model(model, conv_bits=2, fc_bits=2)
    model[1].running_var.fill_(0.3)  # not on an int8 grid: stored as float32, so NaN can be forged
    model[1].running_var[0] = float("nan")
    with pytest.raises(ValueError, match="1.running_var holds NaN"):
        F.save_model(model, tmp_path / "never.dcz")  # the writer refuses what the reader would
    assert not (tmp_path / "never.dcz").exists()
    model[1].running_var[0] = 0.3
    path = tmp_path / "bn.dcz"
    F.save_model(model, path)
    path.write_bytes(edited(path.read_bytes(), _tensor_value("1.running_var", float("nan"))))
    fresh = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(8, 3))
    with pytest.raises(CompressedFileError, match="'1.running_var': holds NaN"):
        export(path, "safetensors", tmp_path / "bn.safetensors", model=fresh, image_size=5)


def test_a_weight_stored_as_a_layer_and_as_a_raw_tensor_is_refused(small_file, tmp_path):
    model, layers, others, _ = small_file
    name = next(iter(layers))
    blob = F.encode_file(model.create_args, layers, {**others, f"{name}.weight": layers[name].weight()})
    path = tmp_path / "twice.dcz"
    path.write_bytes(blob)
    for runtime in ("dense", "sparse"):
        with pytest.raises(CompressedFileError, match=f"stores \\['{name}.weight'\\] twice"):
            helpers.load_compressed(path, runtime=runtime)


@pytest.mark.parametrize("runtime", ["dense", "sparse"])
def test_a_refused_file_leaves_the_callers_model_untouched(small_file, tmp_path, runtime):
    from helpers.quantize.quantization import quantize_model

    model = models.create("lenet300", 3, 1, 28)
    quantize_model(model, conv_bits=2, fc_bits=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "m.dcz"
    path.write_bytes(edited(small_file[3], _set(("tensors", 0, "dtype"), "int32")))
    with pytest.raises(CompressedFileError, match="wants"):
        helpers.load_compressed(path, model=model, runtime=runtime)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())
    path.write_bytes(small_file[3])  # and a good file still loads into it
    helpers.load_compressed(path, model=model, runtime=runtime)


def test_a_mismatch_names_the_instance_passed(small_file, tmp_path):
    path = tmp_path / "m.dcz"
    path.write_bytes(small_file[3])
    with pytest.raises(CompressedFileError, match=r"'classifier.1' \(300, 784\) is not a weight of the LeNet5 "
                                                  r"passed as model= \(its 'classifier.1' has \(500, 800\)\): "
                                                  r"pass an instance of the architecture the file was saved from"):
        F.load_compressed(path, model=models.create("lenet5", 3, 1, 28))
