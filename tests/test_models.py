import gc

import pytest

from helpers import models
from helpers.pipeline.config import PROFILES, get_profile


@pytest.mark.parametrize("name", models.names())
def test_output_shapes_at_every_profile_size(name):
    sizes = sorted({p.for_model(name)["image_size"] for p in PROFILES.values()})
    for size in sizes:
        model = models.create(name, 23, 3, size)
        assert models.output_shape(model, 3, size) == (2, 23), (name, size)
        del model
        gc.collect()
    if name in ("lenet300", "lenet5"):
        assert models.output_shape(models.create(name, 10, 1, 28), 1, 28) == (2, 10)


def test_lenet5_matches_the_paper_and_lenet300_too():
    lenet5 = models.create("lenet5", 10, 1, 28)
    weights = sum(m.weight.numel() for m in models.compressible_layers(lenet5).values())
    assert weights == 430_500  # the paper's 431K
    lenet300 = models.create("lenet300", 10, 1, 28)
    assert [m.weight.shape[1] for m in models.compressible_layers(lenet300).values()] == [784, 300, 100]


def test_create_args_rebuild_the_same_architecture():
    model = models.create("alexnet", 7, 3, 64)
    again = models.create(**model.create_args)
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="at least 63 px"):
        models.create("alexnet", 23, 3, 32)
    with pytest.raises(ValueError, match="Unknown model"):
        models.create("resnet", 23)
    with pytest.raises(ValueError, match="No pretrained"):
        models.create("lenet5", 23, pretrained=True)
    with pytest.raises(ValueError, match="Unknown profile"):
        get_profile("huge")


def test_pretrained_without_network_says_so(monkeypatch):
    import torchvision.models as tvm

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm.AlexNet_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="Could not download"):
        models.create("alexnet", 23, 3, 64, pretrained=True)
