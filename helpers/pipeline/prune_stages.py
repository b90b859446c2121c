"""The pruning stages (notebooks 03-04): the plan, prune -> retrain rounds, rounds past the plan while
validation allows, and the dense control. Re-exported by ``helpers.pipeline``; see its docstring for
the stage contract (artefacts, records, resuming)."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..prune import dead_units, pruning, sensitivity, stopping
from .. import models, placement, reporting, training
from ..io import atomic_torch_save
from . import provenance
from .resume import begin, finished, require
from .stage_common import _fit, _reset, _save_record, _say, _teacher, _test, prunable_layers, scan_loader


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
    # rounds past the plan are decided on the same images as the baseline's (helpers.prune.stopping)
    reference = copy.deepcopy(model).eval() if settings["extra_rounds"] > 0 else None
    teacher = _teacher(model, settings)
    schedule = pruning.sparsity_schedule(plan["targets"], settings["prune_rounds"])
    rounds = [_one_round(model, r, targets, train_loader, val_loader, settings, out_dir, device,
                         reference=reference if r == len(schedule) else None, teacher=teacher)
              for r, targets in enumerate(schedule, 1)]
    rounds += _further_rounds(model, plan["targets"], reference, rounds[-1], train_loader, val_loader, settings,
                              out_dir, device, teacher)
    dead = dead_units.remove_dead_units(model, next(iter(val_loader))[0].to(device)) \
        if settings["remove_dead_units"] else None
    record = {**_test(model, test_loader, device), "kept_fraction": pruning.total_kept_fraction(model),
              "per_layer_kept": pruning.kept_fractions(model), "baseline_val": baseline_val, "baseline_val_loss": baseline["loss"],
              "rounds": [{k: v for k, v in r.items() if k != "history"} for r in rounds], "dead_units": dead,
              "settings": recorded}
    atomic_torch_save(model.state_dict(), out_dir / "pruned.pt")
    return _save_record(out_dir, "pruned", record, settings)


def _decision(record: dict, settings: dict) -> dict:
    """Whether a round is kept, with its evidence (``helpers.prune.stopping.decide``): the paired
    accuracy difference to the baseline on the same validation images, not beyond ``stop_tolerance``
    by more than ``stop_z`` standard errors, and, with ``stop_loss_tolerance`` set, validation loss at
    most (1 + it) x the baseline's."""
    return stopping.decide(stopping.PairedCounts(**record["vs_baseline"]), settings["stop_tolerance"],
                           settings["stop_z"], settings["stop_loss_tolerance"])


def _further_rounds(model, planned, reference, last_planned, train_loader, val_loader, settings, out_dir,
                    device, teacher=None) -> list[dict]:
    """Rounds past the plan (``extra_rounds``): each keeps ``extra_keep`` of every pruned layer's
    survivors while the round's paired comparison with the baseline (``reference``) allows
    (``_decision``). The first round that it does not is undone (the previous round's weights come
    back) and ends pruning; none start when the plan itself ended outside it. Rounds are files like
    the planned ones (their paired counts included), so a resumed run takes the same decisions."""
    if settings["extra_rounds"] == 0:
        return []
    last_planned["decision"] = _decision(last_planned, settings)
    if not last_planned["decision"]["accepted"]:
        _say(settings, "pruned", f"no rounds past the plan: {_evidence_line(last_planned['decision'])}")
        return []
    records, first = [], settings["prune_rounds"]
    for step, targets in enumerate(pruning.further_schedule(planned, settings["extra_keep"],
                                                            settings["extra_rounds"]), 1):
        record = _one_round(model, first + step, targets, train_loader, val_loader, settings, out_dir, device,
                            reference=reference, teacher=teacher)
        decision = _decision(record, settings)
        records.append({**record, "extra": True, "accepted": decision["accepted"], "decision": decision})
        if not decision["accepted"]:
            previous = torch.load(out_dir / f"pruned_round{first + step - 1}.pt", map_location="cpu", weights_only=True)
            pruning.load_pruned_state_dict(model, previous)
            model.to(device)
            _say(settings, "pruned", f"round {first + step} undone: {_evidence_line(decision)}; "
                                     f"back to {pruning.total_kept_fraction(model):.2%} kept")
            break
    return records


def _evidence_line(decision: dict) -> str:
    counts = decision["counts"]
    loss = (f", loss {counts['candidate_loss']:.4f} against {counts['baseline_loss']:.4f}"
            if decision["loss_tolerance"] is not None else "")
    return (f"validation {decision['difference']:+.2%} against the baseline on the same images "
            f"(standard error {decision['standard_error']:.2%}, refused below {decision['threshold']:+.2%}; "
            f"McNemar p={decision['mcnemar_p']:.3g}){loss}")


def _one_round(model, r, targets, train_loader, val_loader, settings, out_dir, device, name="pruned",
               reference=None, teacher=None) -> dict:
    """Round ``r``: prune to ``targets`` (None: prune nothing, the dense control), then retrain. With a
    ``reference`` (the baseline), the record also holds the two models' paired validation counts."""
    done = out_dir / f"{name}_round{r}.pt"
    if done.exists():  # resume: this round finished in an earlier run
        state = torch.load(done, map_location=device, weights_only=True)
        pruning.load_pruned_state_dict(model, state) if targets is not None else model.load_state_dict(state)
        record = json.loads((out_dir / f"{name}_round{r}.json").read_text())
        if reference is not None and "vs_baseline" not in record:  # a round recorded before the counts were
            record["vs_baseline"] = asdict(stopping.paired_counts(reference, model, val_loader, device))
            reporting.write_json(out_dir / f"{name}_round{r}.json", record)
        return record
    if targets is not None:
        pruning.prune_to_sparsity(model, targets)
    after_pruning = training.evaluate(model, val_loader, device)["top1"]
    history = _fit(model, train_loader, val_loader, settings["retrain_epochs"], device, settings, f"{name} round {r}",
                   lr=settings["lr"] * settings["retrain_lr_factor"], weight_decay=settings["weight_decay"],
                   checkpoint=out_dir / f"{name}_round{r}_checkpoint.pt", seed_offset=r, teacher=teacher)
    record = {"round": r, "kept": pruning.total_kept_fraction(model), "after_pruning": after_pruning,
              "after_retraining": history[-1]["val_top1"] if history else after_pruning, "history": history,
              **placement.last_bit_conditions(), "code": provenance.code_version()}
    if reference is not None:
        record["vs_baseline"] = asdict(stopping.paired_counts(reference, model, val_loader, device))
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
    teacher = _teacher(model, settings)  # the same loss as the pruning rounds', if they distil
    rounds = [_one_round(model, r, None, train_loader, val_loader, settings, out_dir, device, name="dense_control",
                         teacher=teacher)
              for r in range(1, settings["prune_rounds"] + settings["extra_rounds"] + 1)]
    record = {**_test(model, test_loader, device), "size_bytes": models.dense_size_bytes(model),
              "epochs": len(rounds) * settings["retrain_epochs"],
              "rounds": [{k: v for k, v in r.items() if k != "history"} for r in rounds], "settings": recorded}
    atomic_torch_save(model.state_dict(), out_dir / "dense_control.pt")
    return _save_record(out_dir, "dense_control", record, settings)
