"""The sparse runtime (helpers.runtime.sparse, helpers.runtime.sparse_kernels): layouts from the file's survivors,
the shared-weight kernel against scipy's fp32 CSR and dense products, whole networks against the
dense load."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import helpers
from helpers.coding import fileformat
from helpers.runtime import shared_csr, sparse, sparse_measure
from helpers.coding.fileformat import SparseLayer
from helpers.runtime.sparse import SharedCSR

pytest.importorskip("numba")


def layer(shape, density, k=32, seed=0):
    rng = np.random.default_rng(seed)
    numel = int(np.prod(shape))
    positions = np.flatnonzero(rng.random(numel) < density)
    return SparseLayer(tuple(shape), 8, rng.standard_normal(k).astype(np.float32), positions,
                       rng.integers(0, k, positions.size))


def test_shared_csr_from_known_positions():
    # 2 x 3 weight: survivors at (0, 2) and (1, 0), (1, 1); codebook [10, 20, 30]
    s = SparseLayer((2, 3), 2, np.array([10, 20, 30], np.float32), np.array([2, 3, 4]), np.array([2, 0, 1]))
    m = SharedCSR.from_layer(s)
    assert m.shape == (2, 3)
    assert m.rowptr.tolist() == [0, 1, 3] and m.cols.tolist() == [2, 0, 1] and m.idx.tolist() == [2, 0, 1]
    assert m.cols.dtype == np.uint16 and m.idx.dtype == np.uint8 and m.rowptr.dtype == np.int32
    assert m.nbytes == 3 * 4 + 3 * 2 + 3 + 3 * 4
    np.testing.assert_array_equal(m.to_scipy().toarray(), [[0, 0, 30], [10, 20, 0]])
    y = sparse.SparseLinear(m, None, "shared")(torch.tensor([[1.0, 2.0, 3.0]]))
    assert y.tolist() == [[90.0, 50.0]]


def test_grouped_layout_from_known_positions():
    # 2 x 5 weight, codebook [10, 20, 30]: row 0 keeps (0: index 1), (2: index 0), (4: index 1); row 1
    # keeps (3: index 2). Each index's run is padded to four slots with column 5 (the width).
    s = SparseLayer((2, 5), 2, np.array([10, 20, 30], np.float32), np.array([0, 2, 4, 8]), np.array([1, 0, 1, 2]))
    m = SharedCSR.from_layer(s, group=4)
    assert m.group == 4 and m.nnz == 4 and m.density == 0.4
    assert m.rowptr.tolist() == [0, 2, 3] and m.idx.tolist() == [0, 1, 2]
    assert m.cols.tolist() == [2, 5, 5, 5, 0, 4, 5, 5, 3, 5, 5, 5]
    np.testing.assert_array_equal(m.to_scipy().toarray(), s.dense().numpy())
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 1.0, 0.0, 1.0, 0.0]])
    assert sparse.SparseLinear(m, None, "shared")(x).tolist() == [[150.0, 120.0], [0.0, 30.0]]
    assert sparse.SparseLinear(m, None, "shared")(x[:1]).tolist() == [[150.0, 120.0]]


def test_group_chosen_from_the_padding():
    long_runs = layer((8, 4000), 0.5, k=4)  # ~250 survivors per (row, index): padding under 1 %
    assert SharedCSR.from_layer(long_runs).group == 4
    short_runs = layer((8, 400), 0.1, k=32)  # ~1.3 per run: mostly padding
    assert SharedCSR.from_layer(short_runs).group == 1
    assert SharedCSR.from_layer(long_runs, group=1).group == 1
    with pytest.raises(ValueError, match="group=3"):
        SharedCSR.from_layer(long_runs, group=3)
    with pytest.raises(ValueError, match="at most 256"):
        SharedCSR.from_layer(layer((4, 40), 0.5, k=300), group=4)
    assert SharedCSR.from_layer(layer((4, 40), 0.5, k=300)).group == 1


def test_conv_weight_rows_follow_unfold_order():
    s = layer((4, 3, 2, 2), 0.5)
    np.testing.assert_array_equal(SharedCSR.from_layer(s).to_scipy().toarray(), s.dense().reshape(4, 12).numpy())


@pytest.mark.parametrize("shape,k,group", [((37, 50), 32, 1), ((5, 70000), 300, 1), ((8, 20), 4, 1),
                                           ((37, 50), 32, 4), ((5, 70000), 32, 4), ((9, 300), 2, 4)])
@pytest.mark.parametrize("n", [None, 1, 7, 300])
def test_kernel_matches_scipy_oracle(shape, k, group, n):
    from helpers.runtime.sparse_kernels import shared_matmul

    m = SharedCSR.from_layer(layer(shape, 0.1, k), group=group)
    assert m.cols.dtype == (np.int32 if shape[1] > 65536 else np.uint16)
    assert m.idx.dtype == (np.uint16 if k > 256 else np.uint8)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape[1] if n is None else (shape[1], n)).astype(np.float32)
    y = shared_matmul(m.rowptr, m.cols, m.idx, m.codebook, x, group=group)
    expected = m.to_scipy().astype(np.float64) @ x.astype(np.float64)
    # float32 sums of up to ~7,000 terms in another order: error relative to the largest output
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(m.to_scipy().toarray(), layer(shape, 0.1, k).dense().reshape(shape[0], -1))


def test_empty_layer_and_empty_rows():
    s = SparseLayer((4, 6), 5, np.zeros(1, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    lin = sparse.SparseLinear(SharedCSR.from_layer(s), torch.arange(4.0), "shared")
    assert lin(torch.ones(2, 6)).tolist() == [[0.0, 1.0, 2.0, 3.0]] * 2


@pytest.mark.parametrize("kernel", ["shared", "csr"])
@pytest.mark.parametrize("batch", [1, 3])
def test_linear_and_conv_match_dense_ops(kernel, batch):
    s = layer((16, 40), 0.3)
    bias = torch.randn(16)
    x = torch.randn(batch, 40)
    lin = sparse.SparseLinear(SharedCSR.from_layer(s), bias, kernel)
    torch.testing.assert_close(lin(x), F.linear(x, s.dense(), bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lin(x[None]), F.linear(x, s.dense(), bias)[None], rtol=1e-5, atol=1e-5)
    c = layer((6, 4, 3, 3), 0.4)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)
    sc = sparse.SparseConv2d(conv, SharedCSR.from_layer(c), kernel)
    xi = torch.randn(batch, 4, 11, 9)
    torch.testing.assert_close(sc(xi), F.conv2d(xi, c.dense(), conv.bias, 2, 2, 2), rtol=1e-5, atol=1e-5)


def test_wrong_input_width_is_refused():
    lin = sparse.SparseLinear(SharedCSR.from_layer(layer((4, 6), 0.5)), None, "shared")
    with pytest.raises(ValueError, match="takes 6"):
        lin(torch.ones(1, 7))


def test_layout_choice_follows_density_and_kind():
    assert sparse.choose_layout(nn.Linear(4, 4), 0.05) == "sparse"
    assert sparse.choose_layout(nn.Linear(4, 4), 0.9) == "dense"
    assert sparse.choose_layout(nn.Conv2d(4, 4, 3), 0.5) == "dense"
    assert sparse.choose_layout(nn.Conv2d(4, 4, 3), 0.5, {"conv": 0.6}) == "sparse"
    assert sparse.choose_layout(nn.Conv2d(4, 4, 3, groups=2), 0.01) == "sparse"
    assert sparse.choose_layout(nn.Conv2d(4, 4, 3, groups=2), 0.01, kernel="csr") == "dense"  # im2col: groups=1
    assert sparse.choose_layout(nn.Conv2d(4, 4, 3, groups=4), 0.01) == "dense"  # depthwise stays dense
    assert sparse.choose_layout(nn.Conv2d(4, 4, 1), 0.5, {"conv": 0.6}) == "sparse"  # "conv" covers 1x1
    assert sparse.choose_layout(nn.Conv2d(4, 4, 1), 0.5, {"conv": 0.6, "conv1x1": 0.4}) == "dense"

    class SamePaddingConv(nn.Conv2d):  # pads inside forward: replacing it would drop the padding
        def forward(self, x):
            return super().forward(F.pad(x, (1, 1, 1, 1)))

    assert sparse.choose_layout(SamePaddingConv(4, 4, 3), 0.01) == "dense"


CONV_CASES = [  # (in, out, kernel, stride, padding, dilation, groups, input h x w)
    (8, 6, 1, 1, 0, 1, 1, (7, 9)),      # 1x1: one contiguous row of H*W per survivor
    (8, 6, 1, 2, 0, 1, 1, (7, 9)),      # 1x1, strided (ResNet's downsample)
    (4, 6, 3, 1, 1, 1, 1, (11, 9)),     # 3x3 "same"
    (4, 6, 3, 2, 1, 1, 1, (11, 10)),    # strided
    (4, 6, (3, 5), (2, 1), (0, 2), (2, 1), 1, (13, 9)),  # asymmetric kernel, stride, padding, dilation
    (6, 9, 3, 1, 1, 1, 3, (8, 8)),      # grouped
    (3, 5, 7, 2, 3, 1, 1, (20, 18)),    # a 7x7 stem
    (4, 2, 5, 1, 0, 1, 1, (5, 5)),      # output of 1x1
    (16, 8, 3, 1, 1, 1, 1, (4, 4)),     # small planes (VGG16's conv4 at 32 px)
    (16, 8, 3, 1, 1, 1, 1, (2, 3)),
    (16, 8, 3, 2, 1, 2, 1, (7, 7)),     # 3 x 3 outputs, strided and dilated
    (6, 9, 3, 1, 1, 1, 3, (3, 3)),      # grouped on a small plane
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c[:7]) for c in CONV_CASES])
@pytest.mark.parametrize("batch", [0, 1, 3])
def test_direct_sparse_convolution_matches_conv2d(case, batch):
    cin, cout, k, stride, padding, dilation, groups, (h, w) = case
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=True)
    weight = layer(tuple(conv.weight.shape), 0.35, k=256, seed=cin + cout)
    sc = sparse.SparseConv2d(conv, SharedCSR.from_layer(weight, group=1), "shared")
    x = torch.randn(batch, cin, h, w, generator=torch.Generator().manual_seed(batch))
    expected = F.conv2d(x, weight.dense(), conv.bias, conv.stride, conv.padding, conv.dilation, groups)
    got = sc(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_convolution_refuses_inputs_it_cannot_take():
    conv = nn.Conv2d(4, 6, 3)
    sc = sparse.SparseConv2d(conv, SharedCSR.from_layer(layer((6, 4, 3, 3), 0.5), group=1), "shared")
    with pytest.raises(ValueError, match=r"takes \(N, 4, H, W\)"):
        sc(torch.ones(1, 3, 8, 8))
    with pytest.raises(ValueError, match="smaller than the layer's kernel"):
        sc(torch.ones(1, 4, 2, 8))
    with pytest.raises(ValueError, match="groups=1 only"):
        sparse.SparseConv2d(nn.Conv2d(4, 6, 3, groups=2), SharedCSR.from_layer(layer((6, 2, 3, 3), 0.5)), "csr")


def test_the_kernels_run_on_torchs_thread_count():
    import numba

    before = torch.get_num_threads()
    conv = nn.Conv2d(4, 6, 3)
    sc = sparse.SparseConv2d(conv, SharedCSR.from_layer(layer((6, 4, 3, 3), 0.5), group=1), "shared")
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            torch.set_num_threads(threads)
            sc(torch.ones(1, 4, 8, 8))
            assert numba.get_num_threads() == threads
        torch.set_num_threads(numba.config.NUMBA_NUM_THREADS + 3)  # more than the cores: capped
        sc(torch.ones(1, 4, 8, 8))
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    finally:
        torch.set_num_threads(before)


CASES = [("lenet300", 1, 28, 0.1), ("lenet5", 1, 28, 0.2), ("alexnet", 3, 64, None), ("vgg16", 3, 32, None),
         ("resnet18", 3, 32, 0.3)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sparse")
    out = {}
    for name, channels, size, density in CASES:
        path = folder / f"{name}.dcz"
        if density is None:  # the paper's densities, fc layers thinned so the test stays quick
            density = [min(d, 0.3) if i < len(sparse_measure.PAPER_DENSITY[name]) - 3 else 0.02
                       for i, d in enumerate(sparse_measure.PAPER_DENSITY[name])]
        sparse_measure.random_compressed_file(path, name, size, density, in_channels=channels, seed=3)
        out[name] = (path, channels, size)
    return out


@pytest.mark.parametrize("name", [c[0] for c in CASES])
@pytest.mark.parametrize("break_even,grouped", [(None, False), ({"linear": 1.1, "conv": 1.1}, False),
                                                ({"linear": 1.1, "conv": 1.1}, True)],
                         ids=["chosen", "all-sparse", "all-sparse-grouped"])
def test_sparse_model_matches_dense_load(files, name, break_even, grouped, monkeypatch):
    path, channels, size = files[name]
    if grouped:  # every layer with <= 256 centroids in the grouped layout, however much padding
        monkeypatch.setattr(shared_csr, "MAX_PADDING", 1e9)
    dense = fileformat.load_compressed(path, quantized=False).eval()
    if break_even:  # every layer sparse: no dense weight may be built
        monkeypatch.setattr(SparseLayer, "dense", lambda self: pytest.fail("dense weight materialised"))
    model = sparse.load_sparse(path, break_even=break_even)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    if grouped:  # convolutions keep one index per survivor (the direct kernel's layout)
        assert {m.group for m in model.modules() if isinstance(m, sparse.SparseLinear)} == {4}
        assert {m.group for m in model.modules() if isinstance(m, sparse.SparseConv2d)} <= {1}
    if break_even:
        assert set(model.sparse_plan.values()) == {"sparse"}
        assert not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    for batch in (1, 2):
        x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = dense(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_weights_in_memory_are_the_survivors(files):
    path, _, _ = files["lenet300"]
    model = sparse.load_sparse(path)
    parsed = fileformat.parse(path.read_bytes())
    survivors = sum(s.positions.size for s in parsed.layers.values())
    biases = sum(t.numel() * 4 for t in parsed.tensors.values())
    rowptrs = sum(4 * (s.shape[0] + 1) for s in parsed.layers.values())
    codebooks = sum(s.codebook.nbytes for s in parsed.layers.values())
    assert sparse.weight_bytes(model) == 3 * survivors + biases + rowptrs + codebooks


def test_entry_point_dispatch_and_bad_runtime(files):
    path, _, _ = files["lenet5"]
    model = helpers.load_compressed(path, runtime="sparse")
    assert any(isinstance(m, sparse.SparseLinear) for m in model.modules())
    assert model.metadata == {"image_size": 28}
    with pytest.raises(ValueError, match="runtime="):
        helpers.load_compressed(path, runtime="fast")
    with pytest.raises(ValueError, match="kernel="):
        sparse.load_sparse(path, kernel="gpu")


def test_without_numba_one_clear_error_or_the_csr_fallback(files, monkeypatch):
    path, _, size = files["lenet300"]
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(ImportError, match="pip install numba"):
        sparse.load_sparse(path, kernel="shared")
    with pytest.warns(UserWarning, match="numba is not installed"):
        model = sparse.load_sparse(path)
    assert {m.kernel for m in model.modules() if isinstance(m, sparse.SparseLinear)} == {"csr"}
    x = torch.randn(2, 1, size, size)
    torch.testing.assert_close(model(x), fileformat.load_compressed(path, quantized=False)(x).detach(),
                               rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- issue 24: bad input
def _zero_size_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(36, 10), nn.Linear(10, 0), nn.Linear(0, 10))


@pytest.mark.parametrize("kernel", ["shared", "csr"])
def test_a_batch_of_zero_and_zero_size_layers_run_like_the_dense_model(tmp_path, kernel):
    from helpers.quantize.quantization import quantize_model

    torch.manual_seed(0)
    model = _zero_size_net()
    quantize_model(model, conv_bits=2, fc_bits=2)
    fileformat.save_model(model, tmp_path / "z.dcz")
    net = sparse.load_sparse(tmp_path / "z.dcz", model=_zero_size_net(), kernel=kernel,
                             break_even={"conv": 1.1, "linear": 1.1})  # every layer sparse
    assert set(net.sparse_plan.values()) == {"sparse"}
    model.eval()
    with torch.no_grad():
        for batch in (0, 1, 3):
            x = torch.randn(batch, 1, 5, 5)
            assert net(x).shape == (batch, 10)
            torch.testing.assert_close(net(x), model(x))


def test_the_grouped_layout_of_many_rows_counts_only_the_runs_that_occur():
    import tracemalloc

    rows, width, k = 200_000, 64, 256  # rows * k counters: 51M, 410 MB at int64 (the old layout's)
    rng = np.random.default_rng(0)
    positions = np.arange(rows, dtype=np.int64) * width + rng.integers(0, width, rows)  # one survivor a row
    s = SparseLayer((rows, width), 8, rng.standard_normal(k).astype(np.float32), positions,
                    rng.integers(0, k, rows))
    tracemalloc.start()
    try:
        m = SharedCSR.from_layer(s, group=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20, peak
    assert m.group == 4 and m.nnz == rows and m.rowptr.tolist()[:3] == [0, 1, 2]
    x = rng.standard_normal(width).astype(np.float32)
    np.testing.assert_allclose(m.to_scipy() @ x, s.dense().numpy() @ x, rtol=1e-6)


@pytest.mark.parametrize("indices, positions, problem", [
    ([0, 3], [1, 5], r"codebook index \(0..3\) is outside the codebook's 3 entries"),
    ([0, -1], [1, 5], "outside the codebook"),
    ([0, 1], [5, 1], "strictly increasing"),
    ([0, 1], [1, 6], r"strictly increasing in \[0, 6\)")])
@pytest.mark.parametrize("group", [None, 1, 4])
def test_survivors_outside_the_codebook_or_the_weight_are_refused(indices, positions, problem, group):
    s = SparseLayer((2, 3), 2, np.array([1, 2, 3], np.float32), np.array(positions), np.array(indices))
    with pytest.raises(ValueError, match=problem):
        SharedCSR.from_layer(s, group=group)


def test_the_benchmark_times_onnxruntime_on_the_dense_export_and_can_load_the_machine(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "lenet5.dcz"
    sparse_measure.random_compressed_file(path, "lenet5", 28, 0.2, in_channels=1, seed=3)
    model = fileformat.load_compressed(path, quantized=False).eval()
    x = torch.randn(3, 1, 28, 28)
    ort_model = sparse_measure.OnnxRuntimeModel(model, x[:2])
    with torch.no_grad():
        torch.testing.assert_close(ort_model(x), model(x), rtol=1e-4, atol=1e-4)
    rows = sparse_measure.compare(path, rounds=2, rss=False, ort=True)
    whole, fc = (next(r for r in rows if r["part"] == p) for p in ("all", "fc"))
    assert whole["ort_ms"] > 0 and fc["ort_ms"] is None
    with sparse_measure.busy_processes(1, limit_s=30) as procs:
        assert procs[0].poll() is None  # spinning
    assert procs[0].poll() is not None  # stopped when the block ends


@pytest.mark.parametrize("kernel_size, stride, padding, dilation, ceil_mode",
                         [(3, 2, 1, 1, False), (2, 2, 0, 1, False), (3, 2, 0, 1, True), (3, 1, 1, 2, False)])
@pytest.mark.parametrize("batch", [0, 1, 3])
def test_the_channels_last_max_pool_equals_torchs_to_the_bit(kernel_size, stride, padding, dilation, ceil_mode, batch):
    from helpers.runtime.pooling import ChannelsLastMaxPool2d, replace_max_pools

    pool = nn.MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    x = torch.randn(batch, 5, 13, 11, generator=torch.Generator().manual_seed(batch))
    fast = ChannelsLastMaxPool2d.from_module(pool)
    out = fast(x)
    assert torch.equal(out, pool(x)) and out.is_contiguous()
    net = nn.Sequential(nn.Conv2d(5, 5, 1), pool, nn.MaxPool2d(2, return_indices=True))
    assert replace_max_pools(net) == ["1"] and isinstance(net[1], ChannelsLastMaxPool2d)
    assert type(net[2]) is nn.MaxPool2d, "a pool returning indices is left as it is"


def test_the_first_kernel_launch_leaves_torchs_thread_count_as_it_was():
    """numba's pool and torch share one libgomp; starting the pool used to set every OpenMP op of
    the process to NUMBA_NUM_THREADS threads (dense ResNet-18 on a busy machine: 47 -> 934 ms)."""
    import subprocess

    script = (
        "import torch, numpy as np\n"
        "torch.set_num_threads(1)\n"
        "torch.nn.functional.conv2d(torch.ones(1, 8, 32, 32), torch.ones(8, 8, 3, 3))  # torch's pool in use\n"
        "from helpers.runtime.sparse_kernels import shared_matmul\n"
        "shared_matmul(np.array([0, 1], np.int32), np.zeros(1, np.uint16), np.zeros(1, np.uint8),\n"
        "              np.ones(1, np.float32), np.ones(1, np.float32))\n"
        "import numba\n"
        "print(torch.get_num_threads(), numba.get_num_threads())\n")
    env = {**__import__("os").environ, "NUMBA_NUM_THREADS": "2"}
    env.pop("NUMBA_THREADING_LAYER", None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["1", "1"], out.stdout + out.stderr


@pytest.mark.parametrize("k", [64, 256])
def test_an_indexed_convolution_equals_the_dense_one_and_keeps_a_byte_or_two_a_weight(k):
    from helpers.runtime.indexed import IndexedConv2d

    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2)
    weight = layer(tuple(conv.weight.shape), 0.6, k=k, seed=4)
    indexed = IndexedConv2d(conv, weight)
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(indexed(x), F.conv2d(x, weight.dense(), conv.bias, 2, 1, 1, 2), rtol=0, atol=0)
    assert indexed.indices.itemsize == (1 if k < 256 else 2), "a full 256-entry codebook needs a 257th: zero"
    assert indexed.sparse_nbytes == indexed.indices.itemsize * conv.weight.numel() + 4 * (k + 1)


def test_dense_convolutions_with_many_output_positions_load_indexed(tmp_path):
    from helpers.runtime.indexed import IndexedConv2d

    path = tmp_path / "lenet5.dcz"
    sparse_measure.random_compressed_file(path, "lenet5", 32, 0.6, seed=2)  # above every break-even: dense
    model = sparse.load_sparse(path)
    plain = sparse.load_sparse(path, indexed=False)
    # at 32 px LeNet-5's first convolution has 28 x 28 outputs (>= 256 positions), its second 10 x 10
    assert model.sparse_plan == {**plain.sparse_plan, "features.0": "indexed"}
    assert isinstance(model.get_submodule("features.0"), IndexedConv2d)
    assert set(plain.sparse_plan.values()) == {"dense"}
    assert sparse.weight_bytes(model) < sparse.weight_bytes(plain)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-5)
