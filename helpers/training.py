"""Training and evaluation in the style of torchvision's references/classification (notebook 02).

``fit`` runs epochs with a learning-rate schedule and writes a checkpoint (state_dicts only) after
each epoch, atomically; called again with the same checkpoint path it resumes where it stopped and
ends with the same weights as an uninterrupted run, because every epoch reseeds its own randomness.

``fit(..., world_size=N)`` trains data-parallel on N processes, or joins torchrun's (see
``helpers.distributed``): each rank takes 1/N of every global batch (DistributedSampler, reseeded
per epoch), DDP averages the gradients, so masks, codebooks and weights stay identical on every
rank; validation is split among the ranks (each image once) and summed; rank 0 alone logs and
writes the checkpoint, and on resume reads it and sends it to the others.

``precision`` (autocast) and ``set_channels_last`` (the layout of image batches): see
``helpers.placement``. ``fit(..., teacher=, distill_weight=)`` mixes a teacher's softened outputs into
the training loss (knowledge distillation: ``distillation_loss``, ``DistillationCriterion``).
"""

from __future__ import annotations

import copy
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .io import atomic_torch_save
from .placement import autocast_for, check_precision, to_device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch. Call it explicitly; importing helpers never does."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(preference: str | None = None) -> torch.device:
    """``preference`` if given, else cuda (under torchrun this process's GPU), then mps, then cpu."""
    if preference:
        return torch.device(preference)
    if torch.cuda.is_available():
        if distributed.torchrun_world_size() > 1:  # one GPU per process: LOCAL_RANK's
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list[int]:
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(targets[:, None])
    return [int(hits[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


def _progress(iterable, desc, enabled):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


def train_one_epoch(model, criterion, optimizer, loader, device, scheduler=None, scaler=None,
                    autocast=None, progress=True, desc="train") -> dict:
    """One pass over ``loader``; ``scheduler`` (if any) steps after every batch."""
    model.train()
    autocast = autocast or nullcontext()
    total_loss, correct, seen = 0.0, 0, 0
    for images, targets in _progress(loader, desc, progress):
        images, targets = to_device(images, device), targets.to(device, non_blocking=True)
        with autocast:
            logits = model(images)
            # a distillation criterion asks its teacher about the same (augmented) images
            loss = criterion(logits, targets, images) if getattr(criterion, "needs_images", False) \
                else criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(targets)
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(targets)
    return {"loss": total_loss / max(seen, 1), "top1": correct / max(seen, 1), "n": seen}


@torch.no_grad()
def evaluate(model, loader, device, criterion=None, progress=False, limit_batches=None, precision="auto") -> dict:
    """Loss, top-1 and top-5 accuracy (fractions) over ``loader``, or its first ``limit_batches``."""
    sums = _evaluation_sums(model, loader, device, criterion, progress, limit_batches, precision)
    if sums[3] == 0:
        raise ValueError("evaluate() got an empty loader: the split holds no images.")
    return _evaluation_stats(sums)


@torch.no_grad()
def _evaluation_sums(model, loader, device, criterion=None, progress=False, limit_batches=None,
                     precision="auto") -> list[float]:
    """[summed loss, top-1 hits, top-5 hits, images]: sums, so that ranks can add theirs up."""
    model.eval()
    criterion = criterion or nn.CrossEntropyLoss()
    autocast, _ = autocast_for(device, precision)
    total_loss, top1, top5, seen = 0.0, 0, 0, 0
    for i, (images, targets) in enumerate(_progress(loader, "eval", progress)):
        if limit_batches is not None and i >= limit_batches:
            break
        images, targets = to_device(images, device), targets.to(device)
        with autocast:
            logits = model(images)
        total_loss += float(criterion(logits.float(), targets)) * len(targets)
        c1, c5 = topk_correct(logits, targets)
        top1, top5, seen = top1 + c1, top5 + c5, seen + len(targets)
    return [total_loss, top1, top5, seen]


def _evaluation_stats(sums) -> dict:
    loss, top1, top5, seen = sums
    return {"loss": loss / seen, "top1": top1 / seen, "top5": top5 / seen, "n": int(seen)}


@torch.no_grad()
def predict(model, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels, true labels) for a whole loader, e.g. for a confusion matrix."""
    model.eval()
    preds, trues = [], []
    for images, targets in loader:
        preds.append(model(to_device(images, device)).argmax(1).cpu())
        trues.append(targets)
    return torch.cat(preds), torch.cat(trues)


def make_optimizer(params, name="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4):
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer {name!r}; use 'sgd' or 'adamw'.")


def fit(model, train_loader, val_loader, epochs: int, device, lr=0.01, optimizer="sgd",
        weight_decay=5e-4, momentum=0.9, label_smoothing=0.0, warmup_epochs=0, checkpoint=None,
        seed=0, progress=True, log=print, world_size: int = 1, precision: str = "auto", teacher=None,
        distill_weight: float = 0.0, distill_temperature: float = 4.0) -> list[dict]:
    """Train for ``epochs`` with a cosine schedule; return the per-epoch history.

    With ``checkpoint`` set, the state after every epoch is saved there (atomically) and an existing
    checkpoint is resumed from. Epoch ``e`` reseeds torch with ``seed`` and ``e`` so that data order and
    augmentation do not depend on whether the run was interrupted.

    ``world_size > 1``: data-parallel on that many processes (this one is rank 0; ``model`` ends up
    trained in place). Under torchrun, or inside a running process group, the group's size is used
    and ``world_size`` is ignored. ``precision``: see the module docstring.

    ``teacher`` with ``distill_weight`` > 0: the training loss mixes in the teacher's softened outputs
    on the same batches (``distillation_loss`` below); validation loss stays the plain cross-entropy.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}.")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}.")
    check_precision(precision)
    check_distillation(distill_weight, distill_temperature)
    if distill_weight > 0 and teacher is None:
        raise ValueError(f"distill_weight={distill_weight} needs a teacher model (teacher=...).")
    device = torch.device(device)
    kwargs = dict(device=device, lr=lr, optimizer=optimizer, weight_decay=weight_decay, momentum=momentum,
                  label_smoothing=label_smoothing, warmup_epochs=warmup_epochs, checkpoint=checkpoint,
                  seed=seed, progress=progress, log=log, precision=precision,
                  distillation=(teacher, distill_weight, distill_temperature) if distill_weight > 0 else None)
    if not distributed.join_torchrun_group(device) and world_size > 1:
        return distributed.launch(_fit, world_size, model, train_loader, val_loader, (epochs,), kwargs)
    return _fit(model, train_loader, val_loader, epochs, **kwargs)


def _fit(model, train_loader, val_loader, epochs, device, lr, optimizer, weight_decay, momentum,
         label_smoothing, warmup_epochs, checkpoint, seed, progress, log, precision, distillation=None) -> list[dict]:
    """``fit`` in this process: alone, or as one rank of the running process group."""
    parallel = distributed.is_running()
    rank = distributed.rank()
    log = log if log is not None and rank == 0 else (lambda message: None)
    device = distributed.rank_device(device)
    model.to(device)
    net = model
    if parallel:
        from torch.nn.parallel import DistributedDataParallel

        distributed.broadcast_module(model)  # masks and codebooks included; DDP's own sync skips bools
        train_loader = distributed.shard_train_loader(train_loader, seed)
        val_loader = val_loader and distributed.shard_eval_loader(val_loader)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      forward_sync_buffers=False, init_sync=False)
    opt = make_optimizer(model.parameters(), optimizer, lr, momentum, weight_decay)
    scheduler = _cosine_schedule(opt, epochs, max(len(train_loader), 1), warmup_epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    train_criterion = criterion
    if distillation is not None:
        teacher, weight, temperature = distillation
        train_criterion = DistillationCriterion(teacher, weight, temperature, label_smoothing).to(device)
    history, start = _resume(checkpoint, model, opt, scheduler, log)
    for epoch in range(start, epochs):
        record = _one_epoch(net, model, train_loader, val_loader, (train_criterion, criterion), opt, scheduler, device,
                            precision, seed * 100_003 + epoch + 1_000_003 * rank, epoch, epochs,
                            progress and rank == 0)
        if not np.isfinite(record["train_loss"]):
            raise FloatingPointError(f"Training diverged in epoch {epoch + 1} (loss is {record['train_loss']}); "
                                     f"lower the learning rate (now {lr})"
                                     + (f" and delete {checkpoint} to restart." if checkpoint else "."))
        history.append(record)
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if checkpoint and rank == 0:
            atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                               "history": history}, checkpoint)
    return history


def _cosine_schedule(opt, epochs, steps_per_epoch, warmup_epochs):
    total_steps, warmup_steps = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch

    def lr_factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return float(0.5 * (1 + np.cos(np.pi * min(progress, 1.0))))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def _resume(checkpoint, model, opt, scheduler, log) -> tuple[list, int]:
    """(history, epochs done) from ``checkpoint`` if it exists; under DDP rank 0 reads it for all."""
    state = None
    if checkpoint and distributed.is_main_process() and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if distributed.is_running():
        state = distributed.broadcast_object(state)
    if state is None:
        return [], 0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log(f"resumed from {checkpoint} after epoch {state['epoch']}")
    return state["history"], state["epoch"]


def _one_epoch(net, model, train_loader, val_loader, criteria, opt, scheduler, device, precision, epoch_seed,
               epoch, epochs, progress) -> dict:
    """Train ``net`` (``model``, or its DDP wrapper) one epoch, then validate ``model``; global numbers.
    ``criteria``: (the training loss, the validation loss)."""
    train_criterion, criterion = criteria
    torch.manual_seed(epoch_seed)
    if getattr(train_loader, "generator", None) is not None:
        train_loader.generator.manual_seed(epoch_seed)
    if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
        train_loader.sampler.set_epoch(epoch)
    autocast, scaler = autocast_for(device, precision)
    t0 = time.time()
    train = train_one_epoch(net, train_criterion, opt, train_loader, device, scheduler, scaler, autocast, progress,
                            f"epoch {epoch + 1}/{epochs}")
    train_sums = [train["loss"] * train["n"], train["top1"] * train["n"], train["n"]]
    if distributed.is_running():
        distributed.broadcast_float_buffers(model)  # BatchNorm statistics: rank 0's, as DDP would
        train_sums = distributed.all_sum(train_sums, device)
    val_sums = None
    if val_loader is not None:
        val_sums = _evaluation_sums(model, val_loader, device, criterion, precision=precision)
        val_sums = distributed.all_sum(val_sums, device) if distributed.is_running() else val_sums
        if val_sums[3] == 0:
            raise ValueError("The validation loader is empty: the split holds no images.")
    seen = max(train_sums[2], 1)
    record = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": train_sums[0] / seen,
              "train_top1": train_sums[1] / seen, "time_s": time.time() - t0}
    if val_sums is not None:
        record.update({f"val_{k}": v for k, v in _evaluation_stats(val_sums).items() if k != "n"})
    return record


# ----------------------------------------------------------------------------- distillation
# Knowledge distillation: the dense network teaches its own pruned and quantized copies.
#
# Deep Compression retrains the survivors on the labels alone. A compact pretrained network such as
# EfficientNet-Lite0 has little to spare: at commit 9b1176f its three one-epoch pruning rounds ended
# 0.46 / 1.20 / 2.24 validation points under the fine-tuned baseline. The baseline itself is a better
# teacher than the labels: its softened outputs say which wrong classes are close (a seal that looks
# like an otter), and they are the function the compressed copy is meant to keep.
#
# The loss (Hinton, Vinyals, Dean, *Distilling the Knowledge in a Neural Network*, 2015) mixes the
# usual cross-entropy with the KL divergence from the teacher's to the student's softened outputs::
#
#     (1 - weight) * CE(student, labels) + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
#
# ``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T`` grows. ``weight=0``
# is plain training, to the bit. The teacher runs in eval mode without gradients on the same augmented
# batch as the student, so a step costs one more forward pass of the teacher.


def check_distillation(weight, temperature) -> None:
    """Refuse a mixing weight outside [0, 1] or a temperature that is not a positive number."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"distillation weight must be a number in [0, 1] (0 = labels only), got {weight!r}.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 \
            or temperature == float("inf"):
        raise ValueError(f"distillation temperature must be a finite number > 0 (e.g. 4), got {temperature!r}.")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      weight: float, temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """The mixed loss above, averaged over the batch; ``teacher_logits`` carry no gradient."""
    check_distillation(weight, temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} and "
                         f"{tuple(teacher_logits.shape)}; the teacher must classify the same classes.")
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if weight == 0:
        return hard
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    soft = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return (1 - weight) * hard + weight * temperature ** 2 * soft


class DistillationCriterion(nn.Module):
    """A training criterion ``(logits, targets, images) -> loss`` that asks ``teacher`` about ``images``.

    The teacher is a frozen copy (eval mode, no gradients), so training the student, or the caller
    changing the original afterwards, leaves it alone. ``training.train_one_epoch`` passes the images
    to any criterion whose ``needs_images`` is true.
    """

    needs_images = True

    def __init__(self, teacher: nn.Module, weight: float, temperature: float, label_smoothing: float = 0.0):
        super().__init__()
        check_distillation(weight, temperature)
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.weight, self.temperature, self.label_smoothing = float(weight), float(temperature), label_smoothing

    def train(self, mode: bool = True):  # the teacher stays in eval mode (BatchNorm statistics frozen)
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        return distillation_loss(logits, teacher_logits, targets, self.weight, self.temperature,
                                 self.label_smoothing)


def load_checkpoint_weights(path, model, map_location="cpu"):
    """Load the model weights from a ``fit`` checkpoint or a plain state_dict file."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict(state["model"] if "model" in state and "optimizer" in state else state)
    return model
