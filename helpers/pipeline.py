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
made with other ones (``StaleRunError``, see ``helpers.resume``); a stage whose input is missing
says which stage to run first (``MissingStageError``).

Which layers are pruned: every Conv2d and Linear is quantized, but a layer with fewer than
``MIN_PRUNABLE_WEIGHTS`` weights, or a depthwise convolution (one input channel per group: a 3x3
filter has 9 weights and nothing to spare), is kept whole; the kept-weight budget is met by the
others. Biases and buffers (BatchNorm running statistics) are stored as they are (fp32).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

from . import bit_allocation, compact, config, data, dead_units, models, progress, pruning, quantization, reporting, sensitivity, training
from .resume import (SETTING_DEFAULTS, MissingStageError, StaleRunError, begin,  # noqa: F401
                     dense_parameter_bytes, finished, require)
from .io import atomic_torch_save

MIN_PRUNABLE_WEIGHTS = 256
def _save_record(out_dir: Path, stage: str, record: dict, settings: dict) -> dict:
    metrics = reporting.update_metrics(out_dir, stage, record, dataset=settings.get("dataset") or "custom",
                                       model=settings.get("model_name") or "model", profile=settings.get("profile"),
                                       overrides=settings.get("overrides"))
    return metrics["stages"][stage]


def _say(settings: dict, stage: str, message: str) -> None:
    """One progress line (shown live by the runner; a plain print elsewhere)."""
    progress.emit(f"{settings.get('model_name', 'model')} {stage}  {message}")


def _fit(model, train_loader, val_loader, epochs, device, settings, stage, **kwargs):
    extra = {k: settings[k] for k in ("world_size", "precision") if settings.get(k, SETTING_DEFAULTS[k]) != SETTING_DEFAULTS[k]}
    log = progress.fit_logger(f"{settings.get('model_name', 'model')} {stage}", epochs)
    return training.fit(model, train_loader, val_loader, epochs, device, seed=settings["seed"] + kwargs.pop("seed_offset", 0),
                        log=log, progress=False, **kwargs, **extra)


def _reset(model: nn.Module) -> nn.Module:
    """Plain dense weights (masks and codebooks baked), so any stage's artefact loads into it."""
    return quantization.remove_sharing(model)


def _test(model, test_loader, device) -> dict:
    if test_loader is None:
        return {}
    stats = training.evaluate(model, test_loader, device)
    return {"test_accuracy": stats["top1"], "test_top5": stats["top5"], "test_n": stats["n"]}


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


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Conv2d/Linear layers pruning may thin out (see the module docstring for the rule)."""
    chosen = {}
    for name, layer in models.compressible_layers(model).items():
        depthwise = isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.in_channels == layer.groups
        if not depthwise and layer.weight.numel() >= MIN_PRUNABLE_WEIGHTS:
            chosen[name] = layer
    return chosen


def scan_loader(val_loader, settings, device) -> torch.utils.data.DataLoader:
    """A fixed random slice of the validation split (stored class by class), ``eval_batches`` big."""
    batch = max(val_loader.batch_size, 128 if device.type == "cpu" else val_loader.batch_size)
    size = settings["eval_batches"] and settings["eval_batches"] * batch
    return data.loader(data.evaluation_slice(val_loader.dataset, size, settings["seed"]), batch)


def plan_pruning(model, val_loader, settings, out_dir, *, device=None) -> dict:
    """Sensitivity scan (cached) and the per-layer targets meeting the kept-weight budget (notebook 03).

    Leaves the baseline weights in ``model``; returns the plan also written to ``pruning_plan.json``.
    """
    out_dir, device = Path(out_dir), device or training.pick_device()
    _reset(model)
    training.load_checkpoint_weights(require(out_dir, "baseline.pt", "train_baseline (notebook 02)"), model)
    model.to(device)
    slice_loader = scan_loader(val_loader, settings, device)
    baseline_val = training.evaluate(model, slice_loader, device)["top1"]
    scan = _cached_scan(model, slice_loader, settings, out_dir, device)
    recorded = begin("plan", settings, model, out_dir)
    sizes = {n: layer.weight.numel() for n, layer in prunable_layers(model).items()}
    targets, note = sensitivity.allocate_budget(settings["budget_allocation"], scan, baseline_val, sizes,
                                            settings["sensitivity_tolerance"], settings["target_kept"])
    all_layers = models.compressible_layers(model)
    plan = {"targets": {n: targets.get(n, 0.0) for n in all_layers}, "allocation": settings["budget_allocation"],
            "allocation_note": note, "budget_met": note is not None, "budget": settings["target_kept"],
            "baseline_val_slice": baseline_val, "planned_kept": sensitivity.kept_share(targets, sizes),
            "kept_whole": [n for n in all_layers if n not in sizes], "scan": scan, "settings": recorded}
    reporting.write_json(out_dir / "pruning_plan.json", plan)
    _say(settings, "plan", f"{settings['budget_allocation']}: keep {plan['planned_kept']:.2%} of prunable weights")
    return plan


def _cached_scan(model, slice_loader, settings, out_dir, device) -> dict:
    begin("scan", settings, model, out_dir)
    path = out_dir / "sensitivity_scan.json"
    if path.exists():
        return {name: [tuple(p) for p in curve] for name, curve in json.loads(path.read_text()).items()}
    layers = list(prunable_layers(model))
    started = time.time()
    scan = {}
    for i, name in enumerate(layers, 1):  # one layer at a time, so the terminal shows progress
        scan.update(sensitivity.sensitivity_scan(model, lambda m: training.evaluate(m, slice_loader, device)["top1"],
                                             settings["sensitivity_sparsities"], layers=[name]))
        _say(settings, "scan", f"layer {i}/{len(layers)} {name}  {time.time() - started:.0f} s")
    reporting.write_json(path, scan)
    return scan


def prune_and_retrain(model, train_loader, val_loader, settings, out_dir, *, test_loader=None, device=None) -> dict:
    """Prune toward the plan's targets in rounds, retraining the survivors after each, then past the
    plan while validation allows (``extra_rounds``) and the inputs of units nothing reads
    (``remove_dead_units``) (notebook 04)."""
    out_dir, device = Path(out_dir), device or training.pick_device()
    plan_path = require(out_dir, "pruning_plan.json", "plan_pruning (notebook 03)")
    _reset(model)
    recorded = begin("pruned", settings, model, out_dir)
    if (done := finished("pruned", out_dir)) is not None:
        pruning.load_pruned_state_dict(model, torch.load(out_dir / "pruned.pt", map_location="cpu", weights_only=True))
        model.to(device)
        return done
    plan = json.loads(plan_path.read_text())
    training.load_checkpoint_weights(require(out_dir, "baseline.pt", "train_baseline (notebook 02)"), model)
    model.to(device)
    baseline = training.evaluate(model, val_loader, device)
    baseline_val = baseline["top1"]
    rounds = [_one_round(model, r, targets, train_loader, val_loader, settings, out_dir, device)
              for r, targets in enumerate(pruning.sparsity_schedule(plan["targets"], settings["prune_rounds"]), 1)]
    rounds += _further_rounds(model, plan["targets"], baseline, rounds[-1], train_loader, val_loader, settings,
                              out_dir, device)
    example = next(iter(val_loader))[0].to(device)
    dead = dead_units.remove_dead_units(model, example) if settings["remove_dead_units"] else None
    record = {**_test(model, test_loader, device), "kept_fraction": pruning.total_kept_fraction(model),
              "per_layer_kept": pruning.kept_fractions(model), "baseline_val": baseline_val, "baseline_val_loss": baseline["loss"],
              "rounds": [{k: v for k, v in r.items() if k != "history"} for r in rounds], "dead_units": dead,
              "settings": recorded}
    atomic_torch_save(model.state_dict(), out_dir / "pruned.pt")
    return _save_record(out_dir, "pruned", record, settings)


def _round_allowed(record: dict, baseline: dict, settings: dict) -> bool:
    """Validation accuracy after the round's retraining within ``stop_tolerance`` of the baseline's
    and, with ``stop_loss_tolerance`` set, validation loss at most (1 + it) x the baseline's."""
    allowed = record["after_retraining"] >= baseline["top1"] - settings["stop_tolerance"]
    if settings["stop_loss_tolerance"] is not None and record.get("history"):
        allowed &= record["history"][-1]["val_loss"] <= baseline["loss"] * (1 + settings["stop_loss_tolerance"])
    return bool(allowed)


def _further_rounds(model, planned, baseline, last_planned, train_loader, val_loader, settings, out_dir,
                    device) -> list[dict]:
    """Rounds past the plan (``extra_rounds``): each keeps ``extra_keep`` of every pruned layer's
    survivors while validation after retraining stays as close to the baseline's as the stop
    tolerances allow (``_round_allowed``). The first round that does not is undone (the previous
    round's weights come back) and ends pruning; none start when the plan itself ended outside
    them. Rounds are files like the planned ones, so a resumed run takes the same decisions."""
    if settings["extra_rounds"] == 0 or not _round_allowed(last_planned, baseline, settings):
        return []
    records, first = [], settings["prune_rounds"]
    for step, targets in enumerate(pruning.further_schedule(planned, settings["extra_keep"],
                                                            settings["extra_rounds"]), 1):
        record = _one_round(model, first + step, targets, train_loader, val_loader, settings, out_dir, device)
        records.append({**record, "extra": True, "accepted": _round_allowed(record, baseline, settings)})
        if not records[-1]["accepted"]:
            previous = torch.load(out_dir / f"pruned_round{first + step - 1}.pt", map_location="cpu", weights_only=True)
            pruning.load_pruned_state_dict(model, previous)
            model.to(device)
            loss = record["history"][-1]["val_loss"] if record.get("history") else float("nan")
            _say(settings, "pruned", f"round {first + step} undone: validation {record['after_retraining']:.2%}, "
                                     f"loss {loss:.4f} (baseline {baseline['top1']:.2%}, {baseline['loss']:.4f}); "
                                     f"back to {pruning.total_kept_fraction(model):.2%} kept")
            break
    return records


def _one_round(model, r, targets, train_loader, val_loader, settings, out_dir, device, name="pruned") -> dict:
    """Round ``r``: prune to ``targets`` (None: prune nothing, the dense control), then retrain."""
    done = out_dir / f"{name}_round{r}.pt"
    if done.exists():  # resume: this round finished in an earlier run
        state = torch.load(done, map_location=device, weights_only=True)
        pruning.load_pruned_state_dict(model, state) if targets is not None else model.load_state_dict(state)
        return json.loads((out_dir / f"{name}_round{r}.json").read_text())
    if targets is not None:
        pruning.prune_to_sparsity(model, targets)
    after_pruning = training.evaluate(model, val_loader, device)["top1"]
    history = _fit(model, train_loader, val_loader, settings["retrain_epochs"], device, settings, f"{name} round {r}",
                   lr=settings["lr"] * settings["retrain_lr_factor"], weight_decay=settings["weight_decay"],
                   checkpoint=out_dir / f"{name}_round{r}_checkpoint.pt", seed_offset=r)
    record = {"round": r, "kept": pruning.total_kept_fraction(model), "after_pruning": after_pruning,
              "after_retraining": history[-1]["val_top1"] if history else after_pruning, "history": history}
    reporting.write_json(out_dir / f"{name}_round{r}.json", record)
    atomic_torch_save(model.state_dict(), done)
    _say(settings, name, f"round {r}: kept {record['kept']:.2%}, validation {after_pruning:.2%} before retraining -> "
                         f"{record['after_retraining']:.2%} after")
    return record


def dense_control(model, train_loader, val_loader, settings, out_dir, *, test_loader=None, device=None) -> dict:
    """The baseline given the same retraining rounds as ``prune_and_retrain`` with nothing pruned.

    "No loss" against a baseline that had fewer epochs can hide the effect of the extra training
    (VGG16 here: compressed +1.6 points over its 10-epoch baseline, 4.8 below this control), so the
    compressed model's accuracy is also measured against a dense model trained as long.
    """
    out_dir, device = Path(out_dir), device or training.pick_device()
    _reset(model)
    recorded = begin("dense_control", settings, model, out_dir)
    if (done := finished("dense_control", out_dir)) is not None:
        model.load_state_dict(torch.load(out_dir / "dense_control.pt", map_location="cpu", weights_only=True))
        model.to(device)
        return done
    training.load_checkpoint_weights(require(out_dir, "baseline.pt", "train_baseline (notebook 02)"), model)
    model.to(device)
    # as many rounds as pruning may run (the planned ones and every extra one): trained at least as long
    rounds = [_one_round(model, r, None, train_loader, val_loader, settings, out_dir, device, name="dense_control")
              for r in range(1, settings["prune_rounds"] + settings["extra_rounds"] + 1)]
    record = {**_test(model, test_loader, device), "size_bytes": models.dense_size_bytes(model),
              "epochs": len(rounds) * settings["retrain_epochs"],
              "rounds": [{k: v for k, v in r.items() if k != "history"} for r in rounds], "settings": recorded}
    atomic_torch_save(model.state_dict(), out_dir / "dense_control.pt")
    return _save_record(out_dir, "dense_control", record, settings)


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
    """k-means weight sharing, centroid fine-tuning, then float16 codebooks and int8 biases where
    validation allows (``compact_storage``, ``helpers.compact``) (notebook 05). Each layer's bits:
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
    pruning.load_pruned_state_dict(model, torch.load(pruned_path, map_location="cpu", weights_only=True))
    model.to(device)
    slice_loader = scan_loader(val_loader, settings, device)
    sweep_result = bits_sweep(model, slice_loader, device) if sweep else None
    bits, trials = _allocate_bits(model, val_loader, settings, device)
    started = time.time()
    initial = quantization.quantize_model(model, bits=bits, init="linear")
    cluster_s = time.time() - started
    before = training.evaluate(model, val_loader, device)["top1"]
    before_test = _test(model, test_loader, device).get("test_accuracy")
    history = _fit(model, train_loader, val_loader, settings["quant_epochs"], device, settings, "quantize",
                   lr=settings["lr"] * settings["quant_lr_factor"], weight_decay=0.0,
                   checkpoint=out_dir / "quantized_checkpoint.pt", seed_offset=100)
    after = training.evaluate(model, val_loader, device)["top1"]
    rounded = compact.compact(model, lambda m: training.evaluate(m, val_loader, device)["top1"]) \
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
    ``helpers.bit_allocation``) while validation accuracy stays within ``bits_tolerance``. The whole
    validation split, not the scan's slice: on 1,280 images one image is 0.08 points, and Fashion-MNIST
    LeNet-5's round 7 lost 0.49 points to fc1 at 2 bits, chosen there within 0.3."""
    start = bit_allocation.default_bits(model, settings["conv_bits"], settings["fc_bits"])
    if settings["bit_allocation"] == "fixed":
        return start, []
    bits, trials = bit_allocation.allocate_bits(model, lambda m: training.evaluate(m, val_loader, device)["top1"],
                                                start, settings["bits_tolerance"], settings["min_bits"])
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
    int8 = quantization.int8_model(model)
    stats = training.evaluate(int8, test_loader, torch.device("cpu")) if test_loader is not None else {}
    record = {"test_accuracy": stats.get("top1"), "test_top5": stats.get("top5"),
              "size_bytes": quantization.int8_size_bytes(model), "settings": recorded}
    return _save_record(out_dir, "int8", record, settings)


def encode(model, settings, out_dir, *, metadata=None, test_loader=None, device=None) -> dict:
    """Write the compressed file, its size report, and check it: same weights and outputs, accuracy from it."""
    from . import fileformat

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
                "seed": int(seed), **prof.for_model(key, "custom")}
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
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not models.compressible_layers(model):
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer: nothing to compress.")
    if train_loader is None or val_loader is None:
        raise ValueError("compress needs a train_loader (retraining) and a val_loader (pruning decisions).")
    name = getattr(model, "create_args", {}).get("name") or type(model).__name__
    settings = {**settings_for(profile, name, seed, **overrides), "trained": bool(trained)}
    out_dir, device = Path(out_dir), torch.device(device) if device else training.pick_device()
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
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
    return {"file": stages["compressed"]["file"], "stages": stages, "settings": settings}
