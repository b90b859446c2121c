import copy
import io

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from helpers import models
from helpers.quantize.int8 import int8_model, int8_size_bytes
from helpers.quantize.quantization import (
    QuantizedLayer, cluster_weight, distinct_values, export_quantized, import_quantized, kmeans_1d,
    load_quantized_state_dict, quantize_model)


# ----------------------------------------------------------------------------------------- helpers

@torch.no_grad()
def prune_randomly(model, keep=0.3, seed=0):
    """Zero ~70% of every compressible weight (a stand-in for helpers.prune.pruning)."""
    g = torch.Generator().manual_seed(seed)
    for m in models.compressible_layers(model).values():
        m.weight.mul_(torch.rand(m.weight.shape, generator=g) < keep)


def zero_masks(model):
    return {n: (m.weight == 0).clone() for n, m in models.compressible_layers(model).items()}


def assert_zeros_preserved(model, zeros):
    for n, m in models.compressible_layers(model).items():
        assert torch.equal(m.weight.detach() == 0, zeros[n]), n


def assert_within_bits(model, conv_bits, fc_bits):
    counts = distinct_values(model)
    for n, m in models.compressible_layers(model).items():
        limit = 2 ** (conv_bits if isinstance(m, nn.Conv2d) else fc_bits)
        assert 1 <= counts[n] <= limit, (n, counts[n], limit)


def fine_tune(model, x, y, steps=3, lr=0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def is_nearest(values, centroids, labels):
    d = np.abs(values[:, None] - centroids[None, :])
    return np.all(d[np.arange(values.size), labels] <= d.min(axis=1) + 1e-12)


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return models.create("alexnet", 23, 3, 63)


# ------------------------------------------------------------------------------------- k-means 1-D

def test_linear_init_is_linspace_of_min_max():
    x = np.random.default_rng(0).normal(size=1000)
    c, labels = kmeans_1d(x, 16, init="linear", iters=0)
    np.testing.assert_array_equal(c, np.linspace(x.min(), x.max(), 16))
    assert is_nearest(x, c, labels)


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_matches_sklearn_lloyd(init):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-1, 0.3, 1200), rng.laplace(0.8, 0.2, 800)])
    c0, _ = kmeans_1d(x, 24, init=init, iters=0, seed=3)
    assert c0.size == 24
    c, labels = kmeans_1d(x, 24, init=init, iters=10_000, tol=0, seed=3)
    km = KMeans(24, init=c0.reshape(-1, 1), n_init=1, algorithm="lloyd", max_iter=10_000, tol=0).fit(
        x.reshape(-1, 1))
    np.testing.assert_allclose(c, km.cluster_centers_.ravel(), rtol=1e-10, atol=1e-12)
    d = np.abs(x[:, None] - c[None, :])
    dsorted = np.sort(d, axis=1)
    not_tie = dsorted[:, 1] - dsorted[:, 0] > 1e-9
    assert np.array_equal(labels[not_tie], km.labels_[not_tie])
    assert not_tie.mean() > 0.99


def test_density_and_random_inits_are_valid_and_seeded():
    x = np.random.default_rng(2).standard_t(3, size=20_000).astype(np.float32)
    dens, _ = kmeans_1d(x, 32, init="density", iters=0)
    assert np.all(np.isin(dens, x.astype(np.float64)))  # CDF levels land on data points
    assert np.all(np.diff(dens) > 0) and dens.size <= 32
    # denser where the data is dense: the middle quantile gap is much smaller than the outer one
    assert dens[16] - dens[15] < (dens[-1] - dens[-2]) / 4
    r1, _ = kmeans_1d(x, 32, init="random", iters=0, seed=7)
    r2, _ = kmeans_1d(x, 32, init="random", iters=0, seed=7)
    np.testing.assert_array_equal(r1, r2)
    assert np.all(np.isin(r1, x.astype(np.float64))) and np.all(np.diff(r1) > 0)
    for init in ("density", "random"):
        c, labels = kmeans_1d(x, 32, init=init, seed=0)
        assert c.size <= 32 and np.all(np.diff(c) >= 0)
        assert x.min() <= c.min() and c.max() <= x.max()
        assert labels.min() >= 0 and labels.max() < c.size and is_nearest(x.astype(np.float64), c, labels)


def test_kmeans_edge_cases():
    c, labels = kmeans_1d(np.array([]), 4)
    assert c.size == 0 and labels.size == 0
    c, labels = kmeans_1d(np.array([0.25]), 4)
    assert c.tolist() == [0.25] and labels.tolist() == [0]
    c, labels = kmeans_1d(np.full(50, -1.5), 8)
    assert c.tolist() == [-1.5] and np.all(labels == 0)
    x = np.array([3.0, -1.0, 3.0, 2.0, -1.0])  # fewer unique values than k: exact
    c, labels = kmeans_1d(x, 8)
    assert c.tolist() == [-1.0, 2.0, 3.0]
    np.testing.assert_array_equal(c[labels], x)
    # an initial centroid in an empty gap stays where it was (no relocation)
    x = np.array([-1.0, -0.9, 0.9, 1.0])
    c, labels = kmeans_1d(x, 3, iters=100)
    np.testing.assert_allclose(c, [-0.95, 0.0, 0.95])
    assert labels.tolist() == [0, 0, 2, 2]


def test_kmeans_bad_arguments():
    with pytest.raises(ValueError, match="Unknown k-means init"):
        kmeans_1d(np.ones(3), 2, init="kmeans++")
    with pytest.raises(ValueError, match="k must be"):
        kmeans_1d(np.ones(3), 0)


# ------------------------------------------------------------------------------ clustering weights

def test_cluster_weight_keeps_zeros_out_of_the_codebook():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=g) * (torch.rand(64, 32, generator=g) < 0.4)
    q = cluster_weight(w, 3)
    assert isinstance(q, QuantizedLayer) and q.bits == 3 and q.codebook.dtype == torch.float32
    assert q.indices.dtype == torch.int64 and q.indices.shape == w.shape
    assert torch.equal(q.mask, w != 0) and q.codebook.numel() <= 8
    assert torch.equal(q.weight() == 0, w == 0)
    empty = cluster_weight(torch.zeros(5, 4), 4)
    assert empty.codebook.tolist() == [0.0] and not empty.mask.any() and torch.equal(empty.weight(), torch.zeros(5, 4))
    single = torch.zeros(5, 4)
    single[2, 3] = -0.75
    assert torch.equal(cluster_weight(single, 4).weight(), single)


def test_fully_pruned_and_single_survivor_layers_train():
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3))
    with torch.no_grad():
        model[0].weight.zero_()
        model[1].weight.zero_()
        model[1].weight[1, 2] = 0.5
    quantize_model(model, fc_bits=2)
    assert distinct_values(model) == {"0": 0, "1": 1}
    fine_tune(model, torch.randn(6, 4), torch.randint(0, 3, (6,)), steps=2)
    assert torch.equal(model[0].weight, torch.zeros(5, 4))
    assert torch.count_nonzero(model[1].weight) == 1 and model[1].weight[1, 2] != 0
    assert model[0].parametrizations.weight.original.grad.tolist() == [0.0]


def vgg16_shapes():
    """VGG16-23's distinct layer shapes, read off a model on the meta device (no memory)."""
    with torch.device("meta"):
        vgg = models.create("vgg16", 23, image_size=32)
    # fc6 (4096 x 25088, 103M weights) is left to benchmarks/bench_kmeans.py: too slow for a unit test.
    shapes = {tuple(m.weight.shape): n for n, m in models.compressible_layers(vgg).items() if n != "classifier.0"}
    return [(n, shape) for shape, n in shapes.items()]


def test_vgg16_layer_shapes_cluster_within_bits():
    g = torch.Generator().manual_seed(0)
    for name, shape in vgg16_shapes():
        bits = 8 if len(shape) == 4 else 5
        w = torch.randn(shape, generator=g)
        w[w.abs() < (1.0 if len(shape) == 4 else 2.33)] = 0  # keep ~32% conv, ~2% fc like the paper
        q = cluster_weight(w, bits)
        wq = q.weight()
        assert q.codebook.numel() <= 2 ** bits and torch.equal(wq == 0, w == 0), name
        assert torch.unique(wq[wq != 0]).numel() <= 2 ** bits, name
        with torch.device("meta"):
            layer = nn.Conv2d(shape[1], shape[0], 3) if len(shape) == 4 else nn.Linear(shape[1], shape[0])
        layer = layer.to_empty(device="cpu")
        import_quantized(nn.Sequential(layer), {"0": q})
        assert torch.equal(layer.weight, wq), name


def test_import_takes_compact_indices_and_survivors_only_layers():
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 30, generator=g) * (torch.rand(40, 30, generator=g) < 0.3)
    q = cluster_weight(w, 3)
    compact = QuantizedLayer(q.codebook, q.indices.to(torch.uint8), q.mask, q.bits)  # any integer dtype
    assert torch.equal(compact.weight(), q.weight())  # not taken as a boolean mask
    positions = q.mask.reshape(-1).nonzero().squeeze(1)
    survivors = SimpleNamespace(shape=(40, 30), bits=3, codebook=q.codebook.numpy(),  # as the file holds it
                                positions=positions.int().numpy(),
                                indices=q.indices.reshape(-1)[positions].numpy().astype(np.uint16))
    reference = nn.Sequential(nn.Linear(30, 40))
    import_quantized(reference, {"0": q})
    for layer in (compact, survivors):
        model = nn.Sequential(nn.Linear(30, 40))
        with torch.no_grad():
            model[0].weight.fill_(float("nan"))  # only its shape, dtype and device matter
            model[0].bias.copy_(reference[0].bias)
        import_quantized(model, {"0": layer})
        got, want = model.state_dict(), reference.state_dict()
        assert list(got) == list(want)
        for key in want:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
        assert torch.equal(model[0].weight.view(torch.int32), reference[0].weight.view(torch.int32))
        assert all(torch.equal(a, b) for a, b in zip(model[0].parametrizations.weight[0].survivors(),
                                                      reference[0].parametrizations.weight[0].survivors()))
        x = torch.randn(5, 30, generator=g)
        model(x).sum().backward()
        assert model[0].parametrizations.weight.original.grad.abs().sum() > 0
    # nothing pruned, and everything pruned
    for pos in (np.arange(6), np.zeros(0, dtype=np.int64)):
        model = nn.Sequential(nn.Linear(3, 2))
        layer = SimpleNamespace(shape=(2, 3), bits=1, codebook=np.array([0.5, -1.0], np.float32),
                                positions=pos, indices=pos % 2)
        import_quantized(model, {"0": layer})
        expected = torch.zeros(6) if pos.size == 0 else torch.tensor([0.5, -1.0] * 3)
        assert torch.equal(model[0].weight.reshape(-1), expected)
    # survivors are checked, not trusted
    bad = {"label outside": (np.array([0, 2]), np.array([1, 2])),
           "unsorted": (np.array([4, 1]), np.array([0, 1])), "repeated": (np.array([1, 1]), np.array([0, 1])),
           "past the end": (np.array([1, 6]), np.array([0, 1])),
           "negative": (np.array([-1, 2]), np.array([0, 1])),
           "lengths": (np.array([1, 2]), np.array([0])), "float": (np.array([1.0, 2.0]), np.array([0, 1]))}
    for name, (pos, lab) in bad.items():
        layer = SimpleNamespace(shape=(2, 3), bits=1, codebook=np.array([0.5, -1.0], np.float32),
                                positions=pos, indices=lab)
        with pytest.raises(ValueError):
            import_quantized(nn.Sequential(nn.Linear(3, 2)), {"0": layer})
    with pytest.raises(ValueError, match="shape"):
        import_quantized(nn.Sequential(nn.Linear(3, 3)), {"0": layer})


# --------------------------------------------------------------------------------- model level

@pytest.mark.parametrize("name,size,channels", [("lenet300", 28, 1), ("lenet5", 28, 1)])
def test_lenets_quantize_and_fine_tune_within_bits(name, size, channels):
    torch.manual_seed(0)
    model = models.create(name, 10, channels, size)
    prune_randomly(model)
    zeros = zero_masks(model)
    layers = quantize_model(model, conv_bits=4, fc_bits=3)
    assert set(layers) == set(models.compressible_layers(model))
    assert_within_bits(model, 4, 3)
    assert_zeros_preserved(model, zeros)
    before = {n: q.codebook.clone() for n, q in export_quantized(model).items()}
    x, y = torch.randn(16, channels, size, size), torch.randint(0, 10, (16,))
    fine_tune(model, x, y)
    assert_within_bits(model, 4, 3)
    assert_zeros_preserved(model, zeros)
    counts = distinct_values(model)  # its fast path for quantized layers agrees with torch.unique
    for n, m in models.compressible_layers(model).items():
        assert counts[n] == torch.unique(m.weight[m.weight != 0]).numel(), n
    after = export_quantized(model)
    assert any(not torch.equal(before[n], after[n].codebook) for n in before)


def test_alexnet_quantize_fine_tune_export_import(alexnet):
    model = copy.deepcopy(alexnet)
    with torch.no_grad():  # keep ~10% by magnitude (kaiming-uniform weights: the top tenth of |w|)
        for m in models.compressible_layers(model).values():
            m.weight.mul_(m.weight.abs() > 0.9 * m.weight.abs().max())
    zeros = zero_masks(model)
    quantize_model(model, bits={"classifier.6": 3})
    counts = distinct_values(model)
    assert counts["classifier.6"] <= 8 and counts["features.0"] <= 256 and counts["classifier.1"] <= 32
    assert_within_bits(model, 8, 5)
    x, y = torch.randn(2, 3, 63, 63), torch.randint(0, 23, (2,))
    fine_tune(model, x, y, steps=1, lr=0.01)  # momentum over several steps: the LeNet tests
    assert_within_bits(model, 8, 5)

    exported = export_quantized(model)
    with torch.device("meta"):  # a fresh architecture without paying for its random init
        fresh = models.create("alexnet", 23, 3, 63)
    fresh = fresh.to_empty(device="cpu")
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if "parametrizations" not in k},
                          strict=False)  # biases
    import_quantized(fresh, exported)
    with torch.no_grad(), parametrize.cached():  # build each 37M-weight matrix once
        assert_zeros_preserved(model, zeros)
        for n, m in models.compressible_layers(model).items():
            assert torch.equal(models.compressible_layers(fresh)[n].weight, m.weight), n
            assert torch.equal(exported[n].weight(), m.weight), n
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_only_codebooks_and_biases_are_trainable():
    model = models.create("lenet5", 10, 1, 28)
    quantize_model(model)
    for name, p in model.named_parameters():
        assert name.endswith(".bias") or name.endswith(".parametrizations.weight.original"), name
        if name.endswith("original"):
            assert p.dim() == 1 and p.numel() <= 256
    sd = model.state_dict()
    assert {k for k in sd if k.startswith("features.0.")} == {
        "features.0.bias", "features.0.parametrizations.weight.original",
        "features.0.parametrizations.weight.0.indices", "features.0.parametrizations.weight.0.mask",
        "features.0.parametrizations.weight.0.bits"}
    with pytest.raises(RuntimeError, match="codebook"):
        model.features[0].weight = torch.zeros(20, 1, 5, 5)


@pytest.mark.parametrize("layer", [nn.Linear(20, 10), nn.Conv2d(3, 6, 3)])
def test_centroid_gradient_is_the_sum_of_member_gradients(layer):
    torch.manual_seed(0)
    with torch.no_grad():
        layer.weight.mul_(torch.rand_like(layer.weight) < 0.5)
    model = nn.Sequential(layer)
    q = quantize_model(model, conv_bits=2, fc_bits=2)["0"]
    dense = copy.deepcopy(nn.Linear(20, 10) if isinstance(layer, nn.Linear) else nn.Conv2d(3, 6, 3))
    with torch.no_grad():
        dense.weight.copy_(layer.weight)
        dense.bias.copy_(layer.bias)
    x = torch.randn(4, 20) if isinstance(layer, nn.Linear) else torch.randn(4, 3, 8, 8)
    target = torch.randn_like(dense(x))
    F.mse_loss(model(x), target).backward()
    F.mse_loss(dense(x), target).backward()
    codebook = layer.parametrizations.weight.original
    expected = torch.stack([dense.weight.grad[q.mask & (q.indices == j)].sum()
                            for j in range(codebook.numel())])
    torch.testing.assert_close(codebook.grad, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(layer.bias.grad, dense.bias.grad)
    # and it is what plain autograd through codebook[indices] * mask would give
    cb = codebook.detach().clone().requires_grad_(True)
    bias = dense.bias.detach()
    F.mse_loss(F.linear(x, cb[q.indices] * q.mask, bias) if isinstance(layer, nn.Linear)
               else F.conv2d(x, cb[q.indices] * q.mask, bias), target).backward()
    torch.testing.assert_close(codebook.grad, cb.grad, rtol=1e-5, atol=1e-7)


def test_state_dict_round_trip_with_weights_only_load():
    torch.manual_seed(0)
    model = models.create("lenet5", 10, 1, 28)
    prune_randomly(model)
    quantize_model(model, bits={"features.0": 6})
    fine_tune(model, torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)), steps=1)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = models.create("lenet5", 10, 1, 28)
    load_quantized_state_dict(fresh, state)
    x = torch.randn(4, 1, 28, 28)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert export_quantized(fresh)["features.0"].bits == 6
    # loading into an already quantized model replaces its indices, not just its codebooks
    other = models.create("lenet5", 10, 1, 28)
    prune_randomly(other, seed=1)
    quantize_model(other, bits={"features.0": 6})
    other.load_state_dict(state)
    for n, m in models.compressible_layers(model).items():
        assert torch.equal(models.compressible_layers(other)[n].weight, m.weight), n


class _Mask(nn.Module):  # the shape of helpers.prune.pruning's parametrization: weight = original * mask
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


def test_pruning_parametrized_layers_and_copies_are_handled():
    torch.manual_seed(0)
    model = models.create("lenet300", 10, 1, 28)
    for m in models.compressible_layers(model).values():
        parametrize.register_parametrization(m, "weight", _Mask(torch.rand_like(m.weight) < 0.3))
    zeros = zero_masks(model)
    twin = copy.deepcopy(model)  # shares the injected Parametrized* classes with `model`
    quantize_model(twin, fc_bits=2)
    assert_within_bits(twin, 8, 2)
    assert_zeros_preserved(twin, zeros)
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10)  # the original is untouched and still pruned
    assert_zeros_preserved(model, zeros)
    assert all(isinstance(m.parametrizations.weight[0], _Mask) for m in models.compressible_layers(model).values())
    quantize_model(twin, fc_bits=1)  # re-quantizing a quantized model
    assert_within_bits(twin, 8, 1)
    assert_zeros_preserved(twin, zeros)


def test_bad_bits_and_layer_names_raise_clearly():
    model = models.create("lenet300", 10, 1, 28)
    for bad in (0, 17, 2.5, True):
        with pytest.raises(ValueError, match="integer from 1 to 16"):
            quantize_model(model, fc_bits=bad)
    with pytest.raises(ValueError, match=r"bits\['classifier.1'\]"):
        quantize_model(model, bits={"classifier.1": 0})
    with pytest.raises(ValueError, match="unknown or unselected layer.*'fc9'"):
        quantize_model(model, bits={"fc9": 4})
    with pytest.raises(ValueError, match="Unknown layer"):
        quantize_model(model, layers=["nope"])
    with pytest.raises(ValueError, match="Unknown k-means init"):
        quantize_model(model, init="kmeans++")
    with pytest.raises(ValueError, match="integer from 1 to 16"):
        cluster_weight(torch.ones(3), 0)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())  # nothing half-done
    quantize_model(model, layers=["classifier.1"], bits={"classifier.1": 2})
    assert distinct_values(model)["classifier.1"] <= 4 and distinct_values(model)["classifier.3"] > 1000


# ------------------------------------------------------------------------------------ int8 baseline

def test_int8_model_runs_close_to_fp32_and_costs_a_byte_per_weight(alexnet):
    x = torch.randn(4, 3, 63, 63)
    alexnet.eval()
    with torch.no_grad():
        ref = alexnet(x)
        q = int8_model(alexnet)
        out = q(x)
    assert out.shape == ref.shape
    assert (out - ref).norm() / ref.norm() < 0.05
    weights = sum(m.weight.numel() for m in models.compressible_layers(alexnet).values())
    size = int8_size_bytes(q)
    assert weights <= size < 1.01 * weights + 100_000, (size, weights)  # AlexNet-23: ~57.1 MB


def test_int8_of_a_quantized_model_leaves_it_intact():
    torch.manual_seed(0)
    model = models.create("lenet5", 10, 1, 28)
    quantize_model(model)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        out = int8_model(model)(x)
        assert torch.equal(model(x), ref)
    assert (out - ref).norm() / ref.norm() < 0.05
    assert int8_size_bytes(model) >= 430_500
