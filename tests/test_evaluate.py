import json

import pytest
import torch
from PIL import Image

from helpers import data, evaluate, models
from helpers.coding import fileformat
from helpers.prune import pruning
from helpers.quantize import quantization

import forge  # tests/forge.py: the forged-file generators


@pytest.fixture
def digits_file(tmp_path):
    """A LeNet-300-100 for the offline digits set, pruned + quantized and written as a file."""
    torch.manual_seed(0)
    model = models.create("lenet300", 10, 1, 8)
    pruning.prune_to_sparsity(model, 0.8)
    quantization.quantize_model(model, fc_bits=5)
    splits = data.load_splits("digits", image_size=8)
    meta = {"class_names": splits.class_names, "image_size": 8, "mean": list(splits.mean),
            "std": list(splits.std), "seed": 0}
    path = tmp_path / "digits.dcz"
    fileformat.save_model(model, path, meta)
    return path, model, splits


def test_cli_reports_the_same_accuracy_as_the_model(digits_file, tmp_path, capsys):
    path, model, splits = digits_file
    out = tmp_path / "result.json"
    assert evaluate.main([str(path), "--dataset", "digits", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    preds, trues = [], []
    model.eval()
    with torch.no_grad():
        for x, y in data.loader(splits.test, 64):
            preds.append(model(x).argmax(1))
            trues.append(y)
    expected = (torch.cat(preds) == torch.cat(trues)).double().mean().item()
    assert result["n"] == len(splits.test)
    assert result["test_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert 0 <= result["test_accuracy"] <= result["test_top5"] <= 1
    assert "top-1" in capsys.readouterr().out


def test_split_all_covers_every_image(digits_file):
    path, _, splits = digits_file
    result = evaluate.evaluate_file(path, "digits", split="all")
    assert result["n"] == sum(splits.info["sizes"].values())


def test_classes_are_matched_by_name():
    mapping, unknown = evaluate.class_mapping(["b", "z", "a"], ["a", "b", "c"])
    assert mapping == {0: 1, 2: 0} and unknown == ["z"]


def test_corrupt_file_and_wrong_dataset_give_clear_errors(digits_file, tmp_path, capsys):
    path, _, _ = digits_file
    broken = tmp_path / "broken.dcz"
    broken.write_bytes(path.read_bytes()[:-100])
    assert evaluate.main([str(broken), "--dataset", "digits"]) == 2
    assert capsys.readouterr().err.startswith("error:")
    renamed = tmp_path / "renamed"
    for i in range(2):
        (renamed / f"cls{i}").mkdir(parents=True)
        for j in range(4):  # enough for train, val and test; RGB where the model expects 1 channel
            Image.new("RGB", (8, 8), (40 * j, 10 * i, 0)).save(renamed / f"cls{i}" / f"{j}.png")
    assert evaluate.main([str(path), "--dataset", "folder", "--data-dir", str(renamed)]) == 2
    assert "channel" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path / "missing.dcz"), "--dataset", "digits"])


def rewrite(path, tmp_path, metadata=None, codebook_value=None):
    """A CRC-valid copy of ``path`` with other metadata or one codebook value changed (forged: the
    writer refuses both)."""
    blob = path.read_bytes()
    blob = forge.with_metadata(blob, metadata) if metadata else blob
    blob = forge.with_codebook_value(blob, codebook_value) if codebook_value is not None else blob
    out = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.dcz"
    out.write_bytes(blob)
    return out


@pytest.mark.parametrize("bad,message", [
    ({"class_names": 5}, "'class_names' must be a non-empty list of strings"),
    ({"class_names": [1, 2]}, "'class_names' must be a non-empty list of strings"),
    ({"image_size": 100000}, "'image_size' missing or out of range"),
    ({"image_size": "8"}, "'image_size' missing or out of range"),
    ({"mean": [0.1, 0.2, 0.3]}, "'mean' must be a list of 1 finite numbers"),
    ({"std": [0.0]}, "'std' must be a list of 1 finite numbers above 0"),
    ({"mean": "0.3"}, "'mean' must be a list"),
])
def test_bad_metadata_is_refused_on_load(digits_file, tmp_path, capsys, bad, message):
    path = rewrite(digits_file[0], tmp_path, bad)
    with pytest.raises(fileformat.CompressedFileError, match=message):
        fileformat.read_compressed(path)
    assert evaluate.main([str(path), "--dataset", "digits"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("bad,message", [
    ({"class_names": ["a", "b"]}, "names 2 classes but its model has 10 outputs"),
    ({"image_size": 16}, "says its inputs are 16 px but its model was built for 8 px"),
    ({"seed": "x"}, "not an integer"),
])
def test_metadata_that_does_not_fit_the_model_is_refused(digits_file, tmp_path, capsys, bad, message):
    path = rewrite(digits_file[0], tmp_path, bad)
    assert evaluate.main([str(path), "--dataset", "digits"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_codebook_value_that_is_not_finite_is_refused(digits_file, tmp_path, value):
    path = rewrite(digits_file[0], tmp_path, codebook_value=value)
    with pytest.raises(fileformat.CompressedFileError, match="codebook holds NaN, infinite or huge values"):
        fileformat.load_compressed(path)
