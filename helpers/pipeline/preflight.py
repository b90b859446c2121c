"""What ``helpers.compress`` checks before its first epoch: everything that would otherwise fail, or
silently go wrong, only after hours of training.

* the model: each Conv2d/Linear under one name, and no tensor under two. The pipeline prunes,
  quantizes and stores every layer by its name, so a module registered twice (``self.b = self.a``)
  failed after the baseline (``Unknown layer(s) ['b']``), and tied weights (``fc2.weight =
  fc1.weight``) were pruned and clustered apart and came back untied (6e-5 apart) with no error.
  Both are refused with the way out; compressing them faithfully would need the file to record
  aliases;
* the loaders: an empty one trains or measures nothing (an empty ``train_loader`` wrote a file of
  chance accuracy without a word);
* the metadata: the file's reader accepts only what ``fileformat.check_metadata`` accepts, so a
  bad value is named now, not after all the training as a file that cannot be read.
"""

from __future__ import annotations

from torch import nn

from ..coding import fileformat
from .. import models


def check_compress_arguments(model, train_loader, val_loader, test_loader=None, metadata=None) -> dict:
    """ValueError/TypeError naming the problem and the fix; returns the metadata as the file will hold it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not models.compressible_layers(model):
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer: nothing to compress.")
    check_aliases(model)
    if train_loader is None or val_loader is None:
        raise ValueError("compress needs a train_loader (retraining) and a val_loader (pruning decisions).")
    for name, loader in (("train_loader", train_loader), ("val_loader", val_loader), ("test_loader", test_loader)):
        check_not_empty(loader, name)
    args = getattr(model, "create_args", None) or {}
    return fileformat.check_metadata(metadata, args.get("in_channels"))


def check_not_empty(loader, name: str) -> None:
    """A loader that says it has no batches (``len() == 0``) is refused; None passes."""
    try:
        batches = len(loader)
    except TypeError:  # an iterable without a length: nothing to check without consuming it
        return
    if batches == 0:
        raise ValueError(f"{name} has no batches (an empty dataset, or drop_last=True with fewer samples "
                         "than batch_size): give it data, compress cannot train or measure without any.")


def check_aliases(model: nn.Module) -> None:
    """Refuse a Conv2d/Linear registered under two names, and a parameter or buffer under two names."""
    seen: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if id(module) in seen:
                raise ValueError(f"one {type(module).__name__} is registered as both {seen[id(module)]!r} and "
                                 f"{name!r}: compress stores each layer under one name. Register it once and "
                                 "call that attribute twice in forward().")
            seen[id(module)] = name
    tensors: dict[int, str] = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in named:
        if id(t) in tensors:
            raise ValueError(f"{name!r} is the same tensor as {tensors[id(t)]!r} (tied weights): compress would "
                             "prune and quantize them apart and untie them. Untie them before compressing, "
                             f"e.g. model.{name} = nn.Parameter(model.{tensors[id(t)]}.detach().clone()).")
        tensors[id(t)] = name
