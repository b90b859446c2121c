"""Units nothing reads: pruning the weights that feed them changes no output, so do it.

After pruning, some units (a Linear's output feature, a Conv2d's output channel) have no surviving
weight in any layer that reads them, yet keep their incoming survivors: bytes in the file that
change nothing. Measured on Fashion-MNIST's LeNets pruned by the `paper` profile (commit 6b1ae9d):
LeNet-300-100 at 6.43 % kept has 44 such units in fc1 and 24 in fc2, with 834 survivors (5 % of
all; 6.11 % kept after removal); LeNet-5 at 6.50 % has 75 in fc1 with 689 (2.5 %). This module
finds such units from the masks alone and prunes their incoming weights; the outputs stay the same
to the bit (a unit nobody reads adds 0 x its value everywhere), which ``remove_dead_units`` checks
on a real batch, undoing everything if not.

How the units are found (``unused_units``): a copy of the model with every compressible layer's
weight replaced by its mask (1 per survivor), biases 1, BatchNorm as identity, max-pooling as
average pooling, fed ones. Every activation is then positive, so every ReLU passes gradient, and
the gradient of the summed output reaches a unit exactly when a chain of survivors connects it to
the output (skip connections included). A unit with zero gradient everywhere is read by nothing.
Removing units can leave units feeding only them unread in turn, so it repeats until nothing changes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import models
from . import pruning


def _surrogate(model: nn.Module) -> nn.Module:
    """The structural copy described in the module docstring."""
    twin = copy.deepcopy(model).cpu().float().eval()
    pruning.remove_masks(twin)
    with torch.no_grad():
        for layer in models.compressible_layers(twin).values():
            layer.weight.copy_((layer.weight != 0).float())
            if layer.bias is not None:
                layer.bias.fill_(1.0)
        for module in twin.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None:
                module.running_mean.zero_(), module.running_var.fill_(1.0)
                if module.affine:
                    module.weight.fill_(1.0), module.bias.zero_()
    for name, module in list(twin.named_modules()):
        swap = None
        if isinstance(module, nn.MaxPool2d) and module.dilation in (1, (1, 1)) and not module.return_indices:
            swap = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
        elif isinstance(module, nn.AdaptiveMaxPool2d) and not module.return_indices:
            swap = nn.AdaptiveAvgPool2d(module.output_size)
        elif isinstance(module, nn.ReLU):
            swap = nn.ReLU()  # not in place: the probes below multiply the layers' outputs
        if swap is not None and name:
            twin.set_submodule(name, swap)
    return twin


def unused_units(model: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per compressible layer, a bool tensor over its output units (features / channels): True
    where nothing downstream reads the unit. ``example``: one input batch (only its shape is used)."""
    twin = _surrogate(model)
    layers = models.compressible_layers(twin)
    probes, handles = {}, []

    def hook(name):
        def attach(module, inputs, output):
            probes[name] = torch.ones_like(output, requires_grad=True)
            return output * probes[name]
        return attach

    for name, layer in layers.items():
        handles.append(layer.register_forward_hook(hook(name)))
    try:
        with torch.enable_grad():
            twin(torch.ones_like(example[:1], dtype=torch.float32, device="cpu")).sum().backward()
    finally:
        for h in handles:
            h.remove()
    unused = {}
    for name, probe in probes.items():
        grad = probe.grad if probe.grad is not None else torch.zeros_like(probe)
        per_unit = grad.abs().transpose(0, 1).reshape(grad.shape[1], -1).sum(1)  # dim 1: features / channels
        unused[name] = per_unit == 0
    return unused


@torch.no_grad()
def remove_dead_units(model: nn.Module, example: torch.Tensor, max_passes: int = 10) -> dict:
    """Prune the incoming weights of every unit nothing reads (see the module docstring).

    ``model`` is pruned (masks attached) and not quantized; changed in place only if its outputs on
    ``example`` stay bit-for-bit the same. Returns ``{"units": {layer: n}, "weights": {layer: n},
    "outputs_equal": bool}``; units/weights are empty when nothing was removed or it was undone.
    """
    was_training = model.training
    model.eval()
    saved = copy.deepcopy(model.state_dict())  # apply_masks zeroes what it prunes: undo needs the values
    reference = model(example)
    units, weights = {}, {}
    for _ in range(max_passes):
        masks = pruning.current_masks(model)
        new = {}
        for name, dead in unused_units(model, example).items():
            if name not in masks:
                continue
            keep = masks[name].clone()
            newly = dead.to(keep.device) & keep.reshape(keep.shape[0], -1).any(1)  # unread, still fed
            if newly.any():
                keep[newly] = False
                new[name] = keep
                units[name] = units.get(name, 0) + int(newly.sum())
                weights[name] = weights.get(name, 0) + int(masks[name].sum() - keep.sum())
        if not new:
            break
        pruning.apply_masks(model, new)
    equal = bool(torch.equal(model(example), reference))
    if not equal:  # a structure the surrogate misread: give everything back
        model.load_state_dict(saved)
        units, weights = {}, {}
    model.train(was_training)
    return {"units": units, "weights": weights, "outputs_equal": equal}
