"""Training and evaluation in the style of torchvision's references/classification (notebook 02).

``fit`` runs epochs with a learning-rate schedule and writes a checkpoint (state_dicts only) after
each epoch, atomically; called again with the same checkpoint path it resumes where it stopped and
ends with the same weights as an uninterrupted run, because every epoch reseeds its own randomness.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .io import atomic_torch_save


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch. Call it explicitly; importing helpers never does."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(preference: str | None = None) -> torch.device:
    """``preference`` if given, else cuda, then mps, then cpu."""
    if preference:
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _autocast(device: torch.device):
    if device.type != "cuda":
        return nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


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
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast:
            logits = model(images)
            loss = criterion(logits, targets)
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
    return {"loss": total_loss / max(seen, 1), "top1": correct / max(seen, 1)}


@torch.no_grad()
def evaluate(model, loader, device, criterion=None, progress=False, limit_batches=None) -> dict:
    """Loss, top-1 and top-5 accuracy (fractions) over ``loader``, or its first ``limit_batches``."""
    model.eval()
    criterion = criterion or nn.CrossEntropyLoss()
    autocast, _ = _autocast(device)
    total_loss, top1, top5, seen = 0.0, 0, 0, 0
    for i, (images, targets) in enumerate(_progress(loader, "eval", progress)):
        if limit_batches is not None and i >= limit_batches:
            break
        images, targets = images.to(device), targets.to(device)
        with autocast:
            logits = model(images)
        total_loss += float(criterion(logits.float(), targets)) * len(targets)
        c1, c5 = topk_correct(logits, targets)
        top1, top5, seen = top1 + c1, top5 + c5, seen + len(targets)
    if seen == 0:
        raise ValueError("evaluate() got an empty loader: the split holds no images.")
    return {"loss": total_loss / seen, "top1": top1 / seen, "top5": top5 / seen, "n": seen}


@torch.no_grad()
def predict(model, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels, true labels) for a whole loader, e.g. for a confusion matrix."""
    model.eval()
    preds, trues = [], []
    for images, targets in loader:
        preds.append(model(images.to(device)).argmax(1).cpu())
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
        seed=0, progress=True, log=print) -> list[dict]:
    """Train for ``epochs`` with a cosine schedule; return the per-epoch history.

    With ``checkpoint`` set, the state after every epoch is saved there (atomically) and an existing
    checkpoint is resumed from. Epoch ``e`` reseeds torch with ``seed`` and ``e`` so that data order and
    augmentation do not depend on whether the run was interrupted.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}.")
    model.to(device)
    opt = make_optimizer(model.parameters(), optimizer, lr, momentum, weight_decay)
    steps_per_epoch = max(len(train_loader), 1)
    total_steps, warmup_steps = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch

    def lr_factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return float(0.5 * (1 + np.cos(np.pi * min(progress, 1.0))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    autocast, scaler = _autocast(device)
    history, start = [], 0
    if checkpoint and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start = state["history"], state["epoch"]
        log(f"resumed from {checkpoint} after epoch {start}")

    for epoch in range(start, epochs):
        torch.manual_seed(seed * 100_003 + epoch)
        if getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(seed * 100_003 + epoch)
        t0 = time.time()
        train_stats = train_one_epoch(model, criterion, opt, train_loader, device, scheduler, scaler,
                                      autocast, progress, f"epoch {epoch + 1}/{epochs}")
        val_stats = evaluate(model, val_loader, device, criterion) if val_loader is not None else {}
        record = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": train_stats["loss"],
                  "train_top1": train_stats["top1"], "time_s": time.time() - t0,
                  **{f"val_{k}": v for k, v in val_stats.items() if k != "n"}}
        if not np.isfinite(record["train_loss"]):
            raise FloatingPointError(f"Training diverged in epoch {epoch + 1} (loss is {record['train_loss']}); "
                                     f"lower the learning rate (now {lr})"
                                     + (f" and delete {checkpoint} to restart." if checkpoint else "."))
        history.append(record)
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if checkpoint:
            atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                               "history": history}, checkpoint)
    return history


def load_checkpoint_weights(path, model, map_location="cpu"):
    """Load the model weights from a ``fit`` checkpoint or a plain state_dict file."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict(state["model"] if "model" in state and "optimizer" in state else state)
    return model
