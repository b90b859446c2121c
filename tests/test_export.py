"""Exports of a compressed file (helpers.export): ONNX checked and run by onnxruntime, TorchScript,
safetensors, each giving the dense load's outputs; the command line; missing packages."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from helpers import export, models
from helpers.coding import fileformat
from helpers.runtime import sparse_measure


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "lenet5.dcz"
    sparse_measure.random_compressed_file(path, "lenet5", 28, 0.2, in_channels=1, seed=5)
    return path


def dense_outputs(path, x):
    with torch.no_grad():
        return fileformat.load_compressed(path, quantized=False).eval()(x).numpy()


def test_onnx_passes_the_checker_and_runs_in_onnxruntime(small_file, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = export.export(small_file, "onnx", tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(str(out)))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 28, 28)  # a batch other than the traced 1: the batch axis is dynamic
    got = session.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, dense_outputs(small_file, x), rtol=1e-4, atol=1e-4)


def test_torchscript_round_trip(small_file, tmp_path):
    out = export.export(small_file, "torchscript", tmp_path / "m.pt")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        got = torch.jit.load(str(out))(x).numpy()
    np.testing.assert_allclose(got, dense_outputs(small_file, x), rtol=1e-5, atol=1e-5)


def test_safetensors_round_trip_rebuilds_the_model(small_file, tmp_path):
    st = pytest.importorskip("safetensors")
    out = export.export(small_file, "safetensors", tmp_path / "m.safetensors")
    from safetensors.torch import load_file

    with st.safe_open(str(out), "pt") as f:
        create_args = json.loads(f.metadata()["create_args"])
    model = models.create(**create_args)
    model.load_state_dict(load_file(str(out)))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(model.eval()(x).numpy(), dense_outputs(small_file, x), rtol=1e-6, atol=1e-6)


def test_command_line(small_file, tmp_path, capsys):
    export.main([str(small_file), "--format", "safetensors", "--out", str(tmp_path / "cli.safetensors")])
    assert "cli.safetensors" in capsys.readouterr().out and (tmp_path / "cli.safetensors").exists()


def test_missing_package_is_one_clear_error_before_any_work(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(ImportError, match="--format onnx needs onnx: pip install onnx"):
        export.export(tmp_path / "does-not-exist.dcz", "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_format(small_file, tmp_path):
    with pytest.raises(ValueError, match="use one of onnx, torchscript, safetensors"):
        export.export(small_file, "tflite", tmp_path / "m.tflite")


# ----------------------------------------------------------------------------- issue 24: users' models
class GrayNet(torch.nn.Module):
    """A user's own 1-channel model: no create_args, so the file does not say its input's shape."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


@pytest.fixture(scope="module")
def gray_file(tmp_path_factory):
    from helpers.quantize.quantization import quantize_model

    torch.manual_seed(0)
    model = GrayNet()
    quantize_model(model, conv_bits=2, fc_bits=2)
    path = tmp_path_factory.mktemp("gray") / "gray.dcz"
    fileformat.save_model(model, path, {"image_size": 12})
    return path


def test_a_users_one_channel_model_exports_to_onnx(gray_file, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = export.export(gray_file, "onnx", tmp_path / "g.onnx", model=GrayNet())  # channels from its conv
    x = torch.randn(2, 1, 12, 12)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = fileformat.load_compressed(gray_file, quantized=False, model=GrayNet()).eval()(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert export.example_input(GrayNet(), 7, in_channels=5).shape == (1, 5, 7, 7)  # or as told
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3))
    assert export.example_input(mlp, 6).shape == (1, 2, 6, 6)  # an MLP on pixels: in_features / size**2


@pytest.mark.parametrize("kwargs, problem", [({"image_size": -5}, "image_size must be an integer in"),
                                             ({"image_size": 2.5}, "image_size must be an integer in"),
                                             ({"in_channels": 0}, "in_channels must be an integer in")])
def test_a_bad_input_shape_is_one_clear_error(gray_file, tmp_path, kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        export.export(gray_file, "torchscript", tmp_path / "g.pt", model=GrayNet(), **kwargs)
    assert not (tmp_path / "g.pt").exists()


def test_onnx_carries_what_a_runtime_needs_to_feed_it(tmp_path):
    """class names, image size, mean and std in metadata_props; fed as the README says, onnxruntime
    gives dc-predict's probabilities."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from PIL import Image

    from helpers import data, predict
    from helpers.prune import pruning
    from helpers.quantize import quantization

    torch.manual_seed(0)
    model = models.create("lenet5", 3, 3, 16)
    pruning.prune_to_sparsity(model, 0.7)
    quantization.quantize_model(model)
    meta = {"class_names": ["Crabs", "Seal", "Squid"], "image_size": 16, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4]}
    path = tmp_path / "photo.dcz"
    fileformat.save_model(model, path, meta)
    out = export.export(path, "onnx", tmp_path / "photo.onnx")
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert {k: props[k] for k in meta} == meta and props["create_args"]["name"] == "lenet5"

    image = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)).save(image)
    pixels = data.make_transforms(props["image_size"], props["mean"], props["std"], train=False)(
        Image.open(image).convert("RGB"))  # resize, center-crop, (x / 255 - mean) / std
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": pixels.unsqueeze(0).numpy()})[0]
    probabilities = torch.softmax(torch.from_numpy(logits), 1)[0]
    expected = {t["class"]: t["probability"] for t in predict.predict_files(path, [image], top=3)[0]["top"]}
    for name, p in zip(props["class_names"], probabilities.tolist()):
        assert p == pytest.approx(expected[name], abs=1e-5)


def test_alexnet_at_the_cpu_profiles_64_px_exports_to_onnx(tmp_path):
    """The legacy exporter refused it (adaptive pooling of a 1x1 map to 6x6)."""
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "alexnet.dcz"
    sparse_measure.random_compressed_file(path, "alexnet", 64, 0.05, seed=1)
    out = export.export(path, "onnx", tmp_path / "alexnet.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 64, 64)
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], dense_outputs(path, x), rtol=1e-4, atol=1e-4)


def _export_cases():
    """(model, image size, input channels) of the paper's networks at every profile's photo size (the
    ``paper`` profile's digits at 28 px, one channel), and ResNet-18 and MobileNetV3-small at 224 px."""
    from helpers.pipeline import config

    cases = set()
    for profile in ("ci", "cpu", "paper"):
        for name in ("lenet300", "lenet5", "alexnet", "vgg16"):
            size = config.for_model_value(config.get_profile(profile).image_size, name)
            cases.add((name, size, 3))
    cases |= {("lenet300", 28, 1), ("lenet5", 28, 1), ("resnet18", 224, 3), ("mobilenet_v3_small", 224, 3)}
    return sorted(cases)


@pytest.mark.parametrize("name, size, channels", _export_cases())
def test_every_network_exports_to_onnx_at_every_profiles_size(name, size, channels, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / f"{name}.dcz"
    sparse_measure.random_compressed_file(path, name, size, 0.05, in_channels=channels, seed=2)
    out = export.export(path, "onnx", tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    expected = dense_outputs(path, x)
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, rtol=1e-4,
                               atol=1e-4 * max(1.0, float(np.abs(expected).max())))
