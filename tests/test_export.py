"""Exports of a compressed file (helpers.export): ONNX checked and run by onnxruntime, TorchScript,
safetensors, each giving the dense load's outputs; the command line; missing packages."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from helpers import export, fileformat, models, sparse_measure


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
