"""What every stage function shares: its record in metrics.json, progress lines, training, testing,
and which layers pruning may touch (see ``helpers.pipeline`` for the stages themselves)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from .. import data, models, placement, reporting, training
from . import progress, provenance
from ..quantize import quantization
from .resume import SETTING_DEFAULTS, require

MIN_PRUNABLE_WEIGHTS = 256


def _save_record(out_dir: Path, stage: str, record: dict, settings: dict) -> dict:
    # torch's intra-op threads: results on 1 and 2 threads differ in the last bits (sums in another
    # order), and a gated decision can follow them; recorded, not checked on resume
    # channels-last batches change the last bits the same way (helpers.placement); the commit of the
    # code that finished the stage (helpers.pipeline.provenance)
    record = {**record, **placement.last_bit_conditions(), "code": provenance.code_version()}
    metrics = reporting.update_metrics(out_dir, stage, record, dataset=settings.get("dataset") or "custom",
                                       model=settings.get("model_name") or "model", profile=settings.get("profile"),
                                       overrides=settings.get("overrides"))
    return metrics["stages"][stage]


def _say(settings: dict, stage: str, message: str) -> None:
    """One progress line (shown live by the runner; a plain print elsewhere)."""
    progress.emit(f"{settings.get('model_name', 'model')} {stage}  {message}")


def _fit(model, train_loader, val_loader, epochs, device, settings, stage, teacher=None, **kwargs):
    """``training.fit`` with the stage's settings; ``teacher`` (see ``_teacher``) distils when set."""
    extra = {k: settings[k] for k in ("world_size", "precision") if settings.get(k, SETTING_DEFAULTS[k]) != SETTING_DEFAULTS[k]}
    if teacher is not None:
        extra.update(teacher=teacher, distill_weight=settings["distill_weight"],
                     distill_temperature=settings["distill_temperature"])
    log = progress.fit_logger(f"{settings.get('model_name', 'model')} {stage}", epochs)
    if kwargs.get("checkpoint") is not None:  # this process trains in that run folder: note its code
        provenance.note_work(Path(kwargs["checkpoint"]).parent, stage)
    return training.fit(model, train_loader, val_loader, epochs, device, seed=settings["seed"] + kwargs.pop("seed_offset", 0),
                        log=log, progress=False, **kwargs, **extra)


def _teacher(model: nn.Module, settings: dict, out_dir: Path | None = None) -> nn.Module | None:
    """A frozen copy of ``model`` to distil from, or None when ``distill_weight`` is 0. ``model`` holds
    the fine-tuned baseline, or, with ``out_dir``, its copy is given the run folder's baseline.pt."""
    if settings.get("distill_weight", SETTING_DEFAULTS["distill_weight"]) == 0:
        return None
    teacher = copy.deepcopy(model)
    if out_dir is not None:
        training.load_checkpoint_weights(require(out_dir, "baseline.pt", "train_baseline (notebook 02)"), teacher)
    return teacher.eval().requires_grad_(False)


def _reset(model: nn.Module) -> nn.Module:
    """Plain dense weights (masks and codebooks baked), so any stage's artefact loads into it."""
    return quantization.remove_sharing(model)


def _test(model, test_loader, device) -> dict:
    if test_loader is None:
        return {}
    stats = training.evaluate(model, test_loader, device)
    return {"test_accuracy": stats["top1"], "test_top5": stats["top5"], "test_n": stats["n"]}




def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Conv2d/Linear layers pruning may thin out (the rule: ``helpers.pipeline``'s docstring)."""
    chosen = {}
    for name, layer in models.compressible_layers(model).items():
        if not models.is_depthwise(layer) and layer.weight.numel() >= MIN_PRUNABLE_WEIGHTS:
            chosen[name] = layer
    return chosen


def scan_loader(val_loader, settings, device) -> torch.utils.data.DataLoader:
    """A fixed random slice of the validation split (stored class by class), ``eval_batches`` big."""
    batch = max(val_loader.batch_size, 128 if device.type == "cpu" else val_loader.batch_size)
    size = settings["eval_batches"] and settings["eval_batches"] * batch
    return data.loader(data.evaluation_slice(val_loader.dataset, size, settings["seed"]), batch)

