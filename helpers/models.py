"""Model registry: ``create(name, num_classes, ...)`` builds the paper's four networks and, by their
torchvision name, torchvision's classification models (``resnet18``, ``mobilenet_v3_small``,
``efficientnet_b0``, ... through ``torchvision.models.get_model``, like timm's ``create_model``).

Every model built here remembers its constructor arguments in ``model.create_args`` so that a
compressed file can rebuild it through the same registry (notebook 06). A model of the user's own
class has no registry name; its file is loaded into an instance the user passes
(``helpers.load_compressed(path, model=MyNet())``).
"""

from __future__ import annotations

import torch
from torch import nn

# Smallest input side each architecture accepts (AlexNet's stride-4 stem and three max-pools need 63 px).
MIN_IMAGE_SIZE = {"lenet300": 1, "lenet5": 16, "alexnet": 63, "vgg16": 32}
# torchvision's classifiers end in adaptive pooling; 32 px passes every downsampling stage of the
# ResNets, MobileNets and EfficientNets (a few others need more and fail at their first forward)
TORCHVISION_MIN_IMAGE_SIZE = 32


class LeNet300(nn.Module):
    """LeNet-300-100: a three-layer perceptron, 784-300-100-N on 28x28x1 inputs."""

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, 300),
            nn.ReLU(inplace=True),
            nn.Linear(300, 100),
            nn.ReLU(inplace=True),
            nn.Linear(100, num_classes),
        )

    def forward(self, x):
        return self.classifier(x)


class LeNet5(nn.Module):
    """The paper's Caffe LeNet-5: conv 20@5x5 -> pool -> conv 50@5x5 -> pool -> fc 500 -> fc N.

    Like Caffe's ``lenet_train_test.prototxt`` the only non-linearity is the ReLU after fc 500.
    At 28x28x1 and 10 classes it has 430,500 weights (the paper's 431K).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.MaxPool2d(2),
        )
        side = ((image_size - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(50 * side * side, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _alexnet(num_classes, in_channels, image_size, pretrained):
    from torchvision.models import alexnet

    model = alexnet(weights=_imagenet_weights("AlexNet_Weights") if pretrained else None)
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    if in_channels != 3:
        model.features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
    return model


def _vgg16(num_classes, in_channels, image_size, pretrained):
    from torchvision.models import vgg16

    model = vgg16(weights=_imagenet_weights("VGG16_Weights") if pretrained else None)
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    if in_channels != 3:
        model.features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)
    return model


def _imagenet_weights(enum_name):
    import torchvision.models as tvm

    weights = getattr(tvm, enum_name).IMAGENET1K_V1
    _fetch_weights(weights, f"{enum_name}.IMAGENET1K_V1")
    return weights


def _fetch_weights(weights, label: str) -> None:
    try:
        weights.get_state_dict(progress=False)  # fetch into torch hub's cache now, to fail here clearly
    except Exception as exc:  # urllib raises several unrelated types for "no network"
        raise RuntimeError(
            f"Could not download torchvision's ImageNet weights ({label}): {exc}. "
            "Connect to the internet once (they are cached under ~/.cache/torch/hub), copy the cached "
            "file there by hand, or build the model with pretrained=False."
        ) from exc


def _lenet300(num_classes, in_channels, image_size, pretrained):
    return LeNet300(num_classes, in_channels, image_size)


def _lenet5(num_classes, in_channels, image_size, pretrained):
    return LeNet5(num_classes, in_channels, image_size)


_REGISTRY = {"lenet300": _lenet300, "lenet5": _lenet5, "alexnet": _alexnet, "vgg16": _vgg16}
PRETRAINED_AVAILABLE = {"alexnet", "vgg16"}


def names() -> list[str]:
    """The paper's four networks (the runner's default set)."""
    return list(_REGISTRY)


def torchvision_names() -> list[str]:
    """torchvision's classification models, by the names ``torchvision.models.get_model`` takes."""
    import torchvision.models as tvm

    return [n for n in tvm.list_models(module=tvm) if n not in _REGISTRY]


def is_known(name) -> bool:
    return isinstance(name, str) and (name in _REGISTRY or name in torchvision_names())


def min_image_size(name: str) -> int:
    return MIN_IMAGE_SIZE.get(name, TORCHVISION_MIN_IMAGE_SIZE)


def _torchvision(name, num_classes, in_channels, pretrained):
    import torchvision.models as tvm

    if pretrained:
        weights = tvm.get_model_weights(name).DEFAULT
        _fetch_weights(weights, f"{name} {weights}")
        model = tvm.get_model(name, weights=weights)
        _replace_last_linear(model, num_classes)
    else:
        model = tvm.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _replace_last_linear(model: nn.Module, num_classes: int) -> None:
    """A pretrained classifier's head, resized to ``num_classes`` (freshly initialised)."""
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    _set_submodule(model, name, nn.Linear(last.in_features, num_classes, bias=last.bias is not None))


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    name, first = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if first.groups != 1:
        raise ValueError(f"cannot change the input channels of {type(model).__name__}: its first "
                         "convolution is grouped; use 3-channel images.")
    _set_submodule(model, name, nn.Conv2d(in_channels, first.out_channels, first.kernel_size, first.stride,
                                          first.padding, first.dilation, bias=first.bias is not None))


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def create(name: str, num_classes: int, in_channels: int = 3, image_size: int = 28,
           pretrained: bool = False) -> nn.Module:
    """Build a registered or torchvision model; ``model.create_args`` holds the arguments for rebuilding it."""
    if not is_known(name):
        raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(_REGISTRY)} or a torchvision "
                         "classification model (e.g. resnet18, mobilenet_v3_small, efficientnet_b0; "
                         "helpers.models.torchvision_names() lists them).")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be positive, got {num_classes}, {in_channels}.")
    if image_size < min_image_size(name):
        raise ValueError(
            f"{name} needs inputs of at least {min_image_size(name)} px, got image_size={image_size}; "
            "raise the profile's image size."
        )
    if pretrained and name in _REGISTRY and name not in PRETRAINED_AVAILABLE:
        raise ValueError(f"No pretrained weights for {name}; pretrained=True works for "
                         f"{', '.join(sorted(PRETRAINED_AVAILABLE))} and torchvision's models.")
    if name in _REGISTRY:
        model = _REGISTRY[name](num_classes, in_channels, image_size, pretrained)
    else:
        model = _torchvision(name, num_classes, in_channels, pretrained)
    model.create_args = {"name": name, "num_classes": num_classes, "in_channels": in_channels,
                         "image_size": image_size}
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def dense_size_bytes(model: nn.Module) -> int:
    """Bytes of all parameters stored as dense fp32: the reference for every compression ratio."""
    return 4 * count_parameters(model)


@torch.no_grad()
def output_shape(model: nn.Module, in_channels: int, image_size: int) -> tuple:
    model.eval()
    return tuple(model(torch.zeros(2, in_channels, image_size, image_size)).shape)


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Conv2d and Linear layers whose weights Deep Compression prunes and quantizes, by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
