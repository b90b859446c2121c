"""dc-predict: classify images and folders with a compressed file, against the model as oracle."""

import json

import pytest
import torch
from PIL import Image

from helpers import data, models, predict
from helpers.coding import fileformat
from helpers.prune import pruning
from helpers.quantize import quantization

CLASSES = ["Crabs", "Jelly Fish", "Seal"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture
def photo_file(tmp_path):
    """A 3-class RGB LeNet-5 at 16 px, pruned + quantized, written with its classes and normalization."""
    torch.manual_seed(0)
    model = models.create("lenet5", len(CLASSES), 3, 16)
    pruning.prune_to_sparsity(model, 0.7)
    quantization.quantize_model(model, conv_bits=8, fc_bits=5)
    path = tmp_path / "photos.dcz"
    fileformat.save_model(model, path, {"class_names": CLASSES, "image_size": 16, "mean": MEAN, "std": STD,
                                        "seed": 0})
    return path, model.eval()


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    generator = torch.Generator().manual_seed(1)
    made = []
    for name, mode in (("a.jpg", "RGB"), ("b.png", "RGBA"), ("nested/c.png", "L"), ("nested/d.gif", "P")):
        pixels = (torch.rand(20, 24, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).convert(mode).save(folder / name)
        made.append(folder / name)
    (folder / "notes.txt").write_text("not an image, and not an image file name: skipped in folders")
    return folder, made


def _expected_probabilities(model, path):
    transform = data.make_transforms(16, MEAN, STD, train=False)
    x = transform(predict.read_image(path, 3)).unsqueeze(0)
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)[0]


def test_probabilities_match_the_model_on_each_image(photo_file, images):
    path, model = photo_file
    _, made = images
    results = predict.predict_files(path, made[:2], top=3)
    assert [r["file"] for r in results] == [str(p) for p in made[:2]]
    for result, image in zip(results, made):
        expected = _expected_probabilities(model, image)
        got = {t["class"]: t["probability"] for t in result["top"]}
        assert set(got) == set(CLASSES)
        for i, name in enumerate(CLASSES):
            assert got[name] == pytest.approx(float(expected[i]), abs=1e-5)
        shown = [t["probability"] for t in result["top"]]
        assert shown == sorted(shown, reverse=True) and sum(shown) == pytest.approx(1, abs=1e-5)
    assert len(predict.predict_files(path, made[:1], top=1)[0]["top"]) == 1


def test_a_folder_classifies_every_image_in_it_and_a_bad_one_is_listed(photo_file, images, capsys):
    path, _ = photo_file
    folder, made = images
    broken = folder / "nested" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    results = predict.predict_files(path, [folder], top=2, batch_size=2)
    assert sorted(r["file"] for r in results) == sorted(str(p) for p in [*made, broken])
    bad = [r for r in results if "error" in r]
    assert [r["file"] for r in bad] == [str(broken)] and "not a readable image" in bad[0]["error"]
    assert all(len(r["top"]) == 2 for r in results if "error" not in r)

    assert predict.main([str(path), str(folder), "--top", "2"]) == 1  # some image failed
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == len(made) and "broken.jpg: error: not a readable image" in err
    assert predict.main([str(path), str(made[0]), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["file"] == str(made[0]) and listed[0]["top"][0]["class"] in CLASSES


def test_dense_and_sparse_runtimes_agree(photo_file, images):
    path, _ = photo_file
    _, made = images
    sparse = predict.predict_files(path, made, top=3)
    dense = predict.predict_files(path, made, top=3, runtime="dense")
    for s, d in zip(sparse, dense):
        assert [t["class"] for t in s["top"]] == [t["class"] for t in d["top"]]


def test_bad_arguments_are_explained(photo_file, tmp_path, capsys):
    path, _ = photo_file
    assert predict.main([str(path), str(tmp_path / "nowhere.jpg")]) == 2
    assert "neither an image file nor a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict.main([str(path), str(empty)]) == 2
    assert "no image files" in capsys.readouterr().err
    not_a_model = tmp_path / "model.dcz"
    not_a_model.write_bytes(b"nope")
    assert predict.main([str(not_a_model), str(empty)]) == 2
    assert capsys.readouterr().err.startswith("error:")
    with pytest.raises(ValueError, match="top must be"):
        predict.predict_files(path, [empty], top=0)
