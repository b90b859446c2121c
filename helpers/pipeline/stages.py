"""The Deep Compression pipeline as resumable stage functions, and ``compress`` for any model.

Each stage takes a model (an instance of the architecture: the stage loads what the previous stage
left in the run folder into it), loaders, a settings dict and the run folder; it writes its
artefacts there atomically, resumes from what is there, and returns its stage record, the dict that
goes under ``stages`` in ``metrics.json``::

    train_baseline    -> baseline.pt                         (notebook 02)
    plan_pruning      -> sensitivity_scan.json, pruning_plan.json (03)
    prune_and_retrain -> pruned_round<r>.pt, pruned.pt        (04)
    dense_control     -> dense_control.pt (the same rounds, nothing pruned; when asked) (04)
    quantize          -> quantized.pt; int8_baseline: the int8 row (05)
    encode            -> <model>.dcz, size_report.json        (06)

``compress(model, train_loader, val_loader, out_dir)`` runs them all on a model the user built.
The settings dict is a notebook's ``config.resolve_settings(...)`` or ``settings_for(profile, ...)``.

Resume only what matches: each stage records the settings it depends on and refuses a run folder
made with other ones (``StaleRunError``, see ``helpers.pipeline.resume``); a stage whose input is missing
says which stage to run first (``MissingStageError``).

Which layers are pruned: every Conv2d and Linear is quantized, but a layer with fewer than
``MIN_PRUNABLE_WEIGHTS`` weights, or a depthwise convolution (one input channel per group: a 3x3
filter has 9 weights and nothing to spare), is kept whole; the kept-weight budget is met by the
others. Biases and buffers (BatchNorm running statistics) are stored as they are (fp32).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn

from ..quantize import bit_allocation, compact, int8, quantization
from . import config, preflight
from .. import models, placement, reporting, training
from ..prune import pruning
from ..io import atomic_torch_save
from .lock import RunLock
# the pruning stages live in prune_stages, the shared pieces in stage_common (helpers.pipeline's face
# exports all the stages)
from .prune_stages import dense_control, plan_pruning, prune_and_retrain
from .resume import begin, dense_parameter_bytes, finished, require
from .stage_common import _fit, _reset, _save_record, _say, _teacher, _test, scan_loader


# ----------------------------------------------------------------------------- stages
def train_baseline(model, train_loader, val_loader, settings, out_dir, *, test_loader=None, device=None) -> dict:
    """Train the dense model (notebook 02), or with ``settings["trained"]`` take its weights as they are."""
    out_dir, device = Path(out_dir), device or training.pick_device()
    trained = bool(settings.get("trained", False))
    recorded = begin("baseline", settings, model, out_dir)
    _reset(model)
    if (done := finished("baseline", out_dir)) is not None:
        training.load_checkpoint_weights(out_dir / "baseline.pt", model, map_location="cpu")
        model.to(device)
        _say(settings, "baseline", f"done earlier: test {done.get('test_accuracy', float('nan')):.2%}")
        return done
    epochs = 0 if trained else settings["epochs"]
    history = _fit(model, train_loader, val_loader, epochs, device, settings, "baseline", lr=settings["lr"],
                   weight_decay=settings["weight_decay"], warmup_epochs=settings["warmup_epochs"],
                   checkpoint=out_dir / "baseline_checkpoint.pt") if epochs else []
    model.to(device)
    val = training.evaluate(model, val_loader, device)["top1"] if val_loader is not None else None
    record = {**_test(model, test_loader, device), "val_accuracy": val,
              "size_bytes": models.dense_size_bytes(model), "params": models.count_parameters(model),
              "image_size": settings.get("image_size"), "epochs": epochs,
              "train_time_s": sum(h["time_s"] for h in history), "history": history, "settings": recorded}
    atomic_torch_save(model.state_dict(), out_dir / "baseline.pt")  # last: its presence means "done"
    return _save_record(out_dir, "baseline", record, settings)



def bits_sweep(model, loader, device, bit_grid=(1, 2, 3, 4, 5, 6, 8)) -> dict:
    """Accuracy with only the convolutions, or only the fc layers, clustered to each width (paper Fig. 7).

    No fine-tuning; ``model`` (pruned) is left as it was. Returns ``{"conv": [(bits, top1)], "fc": [...]}``.
    """
    layers = models.compressible_layers(model)
    kinds = {"conv": [n for n, m in layers.items() if isinstance(m, nn.Conv2d)],
             "fc": [n for n, m in layers.items() if isinstance(m, nn.Linear)]}
    sweep = {"conv": [], "fc": []}
    for kind, names in kinds.items():
        for bits in bit_grid if names else []:
            trial = copy.deepcopy(model)
            quantization.quantize_model(trial, layers=names, conv_bits=bits, fc_bits=bits)
            sweep[kind].append((bits, training.evaluate(trial, loader, device)["top1"]))
    return sweep


def quantize(model, train_loader, val_loader, settings, out_dir, *, test_loader=None, device=None,
             sweep: bool = False) -> dict:
    """k-means weight sharing, centroid fine-tuning, then float16 codebooks and normalization tensors
    and int8 biases where validation allows (``compact_storage``, ``helpers.quantize.compact``) (notebook 05). Each layer's bits:
    conv_bits / fc_bits, or narrowed per layer (``bit_allocation="greedy"``, ``_allocate_bits``).

    ``sweep``: first measure accuracy against bits (``bits_sweep``) on the scan's validation slice.
    """
    out_dir, device = Path(out_dir), device or training.pick_device()
    pruned_path = require(out_dir, "pruned.pt", "prune_and_retrain (notebook 04)")
    _reset(model)
    recorded = begin("quantized", settings, model, out_dir)
    if (done := finished("quantized", out_dir)) is not None:
        quantization.load_quantized_state_dict(model, torch.load(out_dir / "quantized.pt", map_location="cpu",
                                                                  weights_only=True))
        model.to(device)
        return done
    # the fine-tuned dense baseline teaches the centroids, if the settings distil
    teacher = _teacher(model, settings, out_dir)
    pruning.load_pruned_state_dict(model, torch.load(pruned_path, map_location="cpu", weights_only=True))
    model.to(device)
    sweep_result = bits_sweep(model, scan_loader(val_loader, settings, device), device) if sweep else None
    bits, trials = _allocate_bits(model, val_loader, settings, device)
    started = time.time()
    initial = quantization.quantize_model(model, bits=bits, init="linear")
    cluster_s = time.time() - started
    before = training.evaluate(model, val_loader, device)["top1"]
    before_test = _test(model, test_loader, device).get("test_accuracy")
    history = _fit(model, train_loader, val_loader, settings["quant_epochs"], device, settings, "quantize",
                   lr=settings["lr"] * settings["quant_lr_factor"], weight_decay=0.0,
                   checkpoint=out_dir / "quantized_checkpoint.pt", seed_offset=100, teacher=teacher)
    after = training.evaluate(model, val_loader, device)["top1"]
    rounded = compact.compact(model, lambda m: training.evaluate(m, val_loader, device)["top1"], accuracy=after) \
        if settings["compact_storage"] else {}
    record = {**_test(model, test_loader, device), "bits": {n: q.bits for n, q in initial.items()},
              "compact_storage": rounded,
              "before_finetune_test_accuracy": before_test, "val_before_finetune": before,
              "val_after_finetune": after, "cluster_s": cluster_s, "history": history, "settings": recorded,
              "bit_allocation": settings["bit_allocation"], "bit_trials": trials,
              **({"bits_sweep": sweep_result} if sweep else {})}
    atomic_torch_save(model.state_dict(), out_dir / "quantized.pt")
    _say(settings, "quantize", f"validation {before:.2%} -> {after:.2%} after centroid fine-tuning")
    return _save_record(out_dir, "quantized", record, settings)


def _allocate_bits(model, val_loader, settings, device) -> tuple[dict, list]:
    """Per-layer bits: the profile's conv/fc widths ("fixed"), or narrowed greedily ("greedy", see
    ``helpers.quantize.bit_allocation``) while validation accuracy stays within ``bits_tolerance`` (and the
    loss within ``bits_loss_tolerance``, when set). The whole
    validation split, not the scan's slice: on 1,280 images one image is 0.08 points, and Fashion-MNIST
    LeNet-5's round 7 lost 0.49 points to fc1 at 2 bits, chosen there within 0.3."""
    start = bit_allocation.default_bits(model, settings["conv_bits"], settings["fc_bits"], settings["depthwise_bits"])
    if settings["bit_allocation"] == "fixed":
        return start, []
    bits, trials = bit_allocation.allocate_bits(model, lambda m: training.evaluate(m, val_loader, device), start,
                                                settings["bits_tolerance"], settings["min_bits"],
                                                settings["bits_loss_tolerance"])
    _say(settings, "quantize", "bits " + ", ".join(f"{n} {b}" for n, b in bits.items()) +
         f" ({len(trials)} trials)")
    return bits, trials


def int8_baseline(model, test_loader, settings, out_dir) -> dict:
    """The original project's approach for comparison: post-training int8 of the dense baseline (CPU)."""
    out_dir = Path(out_dir)
    _reset(model)
    recorded = begin("int8", settings, model, out_dir)
    training.load_checkpoint_weights(require(out_dir, "baseline.pt", "train_baseline (notebook 02)"), model)
    model.cpu()
    int8_net = int8.int8_model(model)
    stats = training.evaluate(int8_net, test_loader, torch.device("cpu")) if test_loader is not None else {}
    record = {"test_accuracy": stats.get("top1"), "test_top5": stats.get("top5"),
              "size_bytes": int8.int8_size_bytes(model), "settings": recorded}
    return _save_record(out_dir, "int8", record, settings)


def encode(model, settings, out_dir, *, metadata=None, test_loader=None, device=None) -> dict:
    """Write the compressed file, its size report, and check it: same weights and outputs, accuracy from it."""
    from ..coding import fileformat

    out_dir, device = Path(out_dir), device or training.pick_device()
    quantized_path = require(out_dir, "quantized.pt", "quantize (notebook 05)")
    _reset(model)
    recorded = begin("compressed", settings, model, out_dir)
    quantization.load_quantized_state_dict(model, torch.load(quantized_path, map_location="cpu", weights_only=True))
    model.cpu().eval()
    path = out_dir / f"{settings.get('model_name') or 'model'}{fileformat.EXTENSION}"
    started = time.time()
    file_bytes = fileformat.save_model(model, path, metadata or {})
    encode_s = time.time() - started
    report = fileformat.size_report(path)
    reporting.write_json(out_dir / "size_report.json", report)
    started = time.time()
    loaded = fileformat.load_compressed(path, model=None if "name" in getattr(model, "create_args", {}) else
                                        copy.deepcopy(model))
    decode_s = time.time() - started
    loaded.eval()
    same = _same_outputs(model, loaded, test_loader)
    dense_bytes = dense_parameter_bytes(model)
    record = {**_test(loaded.to(device), test_loader, device), "size_bytes": file_bytes,
              "compression_ratio": dense_bytes / file_bytes, "dense_bytes": dense_bytes, "file": str(path),
              "encode_s": encode_s, "decode_s": decode_s, "entropy_bytes": report[-1]["entropy_bytes"],
              "same_outputs_as_quantized": same, "settings": recorded}
    model.to(device)
    _say(settings, "encode", f"{file_bytes:,} bytes, {dense_bytes / file_bytes:.1f}x smaller than fp32")
    return _save_record(out_dir, "compressed", record, settings)


@torch.no_grad()
def _same_outputs(model, loaded, test_loader) -> bool | None:
    if test_loader is None:
        return None
    model.cpu().eval()
    return all(torch.equal(model(x), loaded.cpu()(x)) for x, _ in test_loader)


# ----------------------------------------------------------------------------- one call
def settings_for(profile: str = "cpu", model_name: str = "default", seed: int = 0, **overrides) -> dict:
    """A stage settings dict for a model outside the notebooks: the profile's values for ``model_name``
    (its own entries for a registry name, else the profile's ``default`` entries), then ``overrides``."""
    base = config.get_profile(profile)  # refuses an unknown profile name
    key = model_name if model_name in base.epochs else config.DEFAULT_KEY
    prof = config.apply_overrides(base, key, overrides)
    settings = {"dataset": "custom", "model_name": model_name, "profile": prof.name, "overrides": overrides,
                "seed": config.check_seed(seed), **prof.for_model(key, "custom")}
    return config.check_settings(settings)


def compress(model: nn.Module, train_loader, val_loader, out_dir, *, test_loader=None, profile: str = "cpu",
             device=None, trained: bool = False, metadata: dict | None = None, seed: int = 0, **overrides) -> dict:
    """Deep Compression of any ``nn.Module`` whose weights live in Conv2d/Linear layers.

    Trains the baseline (or, with ``trained=True``, takes the model's weights as they are), plans and
    runs pruning, quantizes, and writes the compressed file into ``out_dir``; every stage resumes
    from what ``out_dir`` holds when its settings match. ``profile`` and ``overrides`` (any profile
    field, e.g. ``epochs=3, target_kept=0.1``) set the work. ``model`` ends up holding the
    compressed (pruned + weight-shared) model. Returns ``{"file": path, "stages": {...}}``; load the
    file with ``helpers.load_compressed(path)`` (registry models) or ``(path, model=MyNet())``.

    Before any work, the arguments are checked (``helpers.pipeline.preflight``: the model's layers and tied
    tensors, empty loaders, the metadata the file will hold), and ``out_dir``'s lock is taken
    (``helpers.pipeline.lock``): a second compress or runner on the same folder is refused while this runs.
    """
    metadata = preflight.check_compress_arguments(model, train_loader, val_loader, test_loader, metadata)
    name = getattr(model, "create_args", {}).get("name") or type(model).__name__
    settings = {**settings_for(profile, name, seed, **overrides), "trained": bool(trained)}
    out_dir, device = Path(out_dir), torch.device(device) if device else training.pick_device()
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    channels_last_before = placement.channels_last_enabled()
    placement.set_channels_last(settings["channels_last"])  # for this call only: restored below
    try:
        with RunLock(out_dir, flag="out_dir"):  # one writer per folder: two compress calls mixed their artefacts
            stages = _all_stages(model, train_loader, val_loader, settings, out_dir, test_loader, device, metadata)
    finally:
        placement.set_channels_last(channels_last_before)
    return {"file": stages["compressed"]["file"], "stages": stages, "settings": settings}


def _all_stages(model, train_loader, val_loader, settings, out_dir, test_loader, device, metadata) -> dict:
    training.seed_everything(settings["seed"])
    stages = {"baseline": train_baseline(model, train_loader, val_loader, settings, out_dir, test_loader=test_loader,
                                         device=device)}
    plan_pruning(model, val_loader, settings, out_dir, device=device)
    stages["pruned"] = prune_and_retrain(model, train_loader, val_loader, settings, out_dir,
                                         test_loader=test_loader, device=device)
    stages["quantized"] = quantize(model, train_loader, val_loader, settings, out_dir, test_loader=test_loader,
                                   device=device)
    if settings["dense_control"]:  # a copy, so that ``model`` ends up holding the compressed model
        stages["dense_control"] = dense_control(copy.deepcopy(model), train_loader, val_loader, settings, out_dir,
                                                test_loader=test_loader, device=device)
    stages["compressed"] = encode(model, settings, out_dir, metadata=metadata, test_loader=test_loader, device=device)
    return stages
