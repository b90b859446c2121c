"""Run-folder records: which settings a stage's artefacts were made with, so a resume never mixes them.

Before a stage starts, ``begin`` writes ``<stage>.settings.json``: the settings the stage's result
depends on (``STAGE_SETTINGS``), its upstream stages' included (``UPSTREAM``), and a hash of the
model's parameter shapes. A folder whose record differs (a 60-epoch baseline when ``epochs=3`` is
asked) raises ``StaleRunError`` naming each differing setting; artefacts without a record (an older
version's run) are refused the same way. Nothing is deleted: the message says what to delete or to
use another folder. Stages cheap enough to redo (``RECOMPUTED``) overwrite their record instead.
``num_workers`` and ``cache_images`` change speed, not results, so they are not recorded. ``threads``
and ``channels_last`` change results in their last bits only (sums in another order), which a gated
decision can follow; what a stage ran with is kept in its metrics record (and each pruning round's),
not checked, so a run resumed on another machine goes on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from .. import reporting
from ..io import MissingStageOutput

# settings each stage's result depends on (its upstream stages' are added by _fingerprint)
STAGE_SETTINGS = {
    "baseline": ("dataset", "image_size", "per_class", "seed", "epochs", "batch_size", "lr", "weight_decay",
                 "warmup_epochs", "world_size", "precision", "trained", "pretrained"),
    "scan": ("sensitivity_sparsities", "eval_batches"),
    "plan": ("sensitivity_tolerance", "target_kept", "budget_allocation"),
    "pruned": ("prune_rounds", "retrain_epochs", "retrain_lr_factor", "extra_rounds", "extra_keep", "stop_tolerance",
               "stop_loss_tolerance", "stop_z", "remove_dead_units", "distill_weight", "distill_temperature"),
    "dense_control": ("prune_rounds", "retrain_epochs", "retrain_lr_factor", "extra_rounds", "distill_weight",
                      "distill_temperature"),
    "quantized": ("conv_bits", "fc_bits", "depthwise_bits", "quant_epochs", "quant_lr_factor", "bit_allocation",
                  "bits_tolerance", "bits_loss_tolerance", "min_bits", "compact_storage", "distill_weight",
                  "distill_temperature"),
    "int8": (),
    "compressed": (),
}
# a setting added after a run folder was made counts as this value there (so such folders still resume)
SETTING_DEFAULTS = {"trained": False, "pretrained": False, "world_size": 1, "precision": "auto", "extra_rounds": 0, "extra_keep": 0.8,
                    "stop_tolerance": 0.0, "stop_loss_tolerance": None, "stop_z": None,
                    "remove_dead_units": False, "bit_allocation": "fixed", "bits_tolerance": 0.005, "min_bits": 2,
                    "bits_loss_tolerance": None,
                    "compact_storage": False, "distill_weight": 0.0, "distill_temperature": 4.0,
                    "depthwise_bits": None}
# stages cheap enough to redo: a record with other settings is overwritten, not refused
RECOMPUTED = {"plan", "int8", "compressed"}
UPSTREAM = {"baseline": None, "scan": "baseline", "plan": "scan", "pruned": "plan", "quantized": "pruned",
            "int8": "baseline", "compressed": "quantized",
            "dense_control": "baseline"}
# what a stage leaves in the run folder: a finished stage has its first file
ARTEFACTS = {"baseline": ("baseline.pt", "baseline_checkpoint.pt"), "scan": ("sensitivity_scan.json",),
             "plan": ("pruning_plan.json",), "pruned": ("pruned.pt", "pruned_round1.pt", "pruned_round1_checkpoint.pt"),
             "quantized": ("quantized.pt", "quantized_checkpoint.pt"), "int8": (), "compressed": (),
             "dense_control": ("dense_control.pt", "dense_control_round1.pt", "dense_control_round1_checkpoint.pt")}

# what a finished stage no longer needs: its final artefact -> the per-epoch checkpoints and per-round
# weights it was resumed from (~100 MB a round for a ResNet-18); the small per-round JSON records stay
INTERMEDIATE = {"baseline.pt": ("baseline_checkpoint.pt",), "pruned.pt": ("pruned_round*.pt",),
                "dense_control.pt": ("dense_control_round*.pt",), "quantized.pt": ("quantized_checkpoint.pt",)}


class StaleRunError(RuntimeError):
    """The run folder holds a stage's results made with other settings; the message says which."""


class MissingStageError(MissingStageOutput):
    """A stage's input is not in the run folder; the message names the stage to run first."""


# ----------------------------------------------------------------------------- settings records
def architecture_key(model: nn.Module) -> str:
    """A short hash of the model's parameter and buffer names and shapes (not values)."""
    shapes = sorted((k.replace(".parametrizations.weight.original", ".weight"), tuple(v.shape))
                    for k, v in _plain_state_shapes(model).items())
    return hashlib.sha256(repr(shapes).encode()).hexdigest()[:16]


def _plain_state_shapes(model: nn.Module) -> dict:
    """State_dict shapes as the dense model has them (masks, codebooks and indices left out)."""
    out = {}
    for key, value in model.state_dict().items():
        if ".parametrizations.weight.0." in key:
            continue
        if key.endswith(".parametrizations.weight.original"):
            layer = model.get_submodule(key[: -len(".parametrizations.weight.original")])
            value = layer.weight
        out[key] = value
    return out


def _parameter_names(model: nn.Module) -> set:
    """State_dict keys of the dense model's parameters (a quantized weight counts as its layer's weight)."""
    return {k for k, _ in model.named_parameters()} | {
        k for k in model.state_dict() if k.endswith(".parametrizations.weight.original")}


def dense_parameter_bytes(model: nn.Module) -> int:
    """fp32 bytes of the model's parameters as the dense model has them (the compression ratio's reference)."""
    return 4 * sum(t.numel() for k, t in _plain_state_shapes(model).items() if k in _parameter_names(model))


def recorded_keys(stage: str) -> list:
    """The settings ``stage``'s record holds: its own and its upstream stages'."""
    keys = ["architecture"]
    while stage is not None:
        keys += STAGE_SETTINGS[stage]
        stage = UPSTREAM[stage]
    return keys


def fingerprint(stage: str, settings: dict, model: nn.Module) -> dict:
    """The settings ``stage``'s result depends on, its upstream stages' included."""
    return {k: architecture_key(model) if k == "architecture" else
            _plain_json(settings.get(k, SETTING_DEFAULTS.get(k))) for k in recorded_keys(stage)}


def _plain_json(value):
    return json.loads(json.dumps(reporting._jsonable(value)))


def _read_record(path: Path, keys) -> dict:
    """A settings record, with the defaults of settings added since it was written."""
    found = json.loads(path.read_text())
    return {**{k: _plain_json(SETTING_DEFAULTS[k]) for k in keys if k in SETTING_DEFAULTS}, **found}


def _check_other_records(stage: str, wanted: dict, out_dir: Path) -> None:
    """Refuse when another stage's record in the folder says otherwise of a setting this stage shares.

    Upstream: notebook 06 asked for ``epochs=3`` in a folder quantized after 12 must not write a file
    (or a record) claiming 3. Downstream: a stage cheap enough to redo (the plan) must not overwrite
    its artefacts with settings that a later stage's results (the pruned rounds) were not made with.
    Checked before anything is written, so a refused stage leaves the folder as it was.
    """
    for path in sorted(out_dir.glob("*.settings.json")):
        other = path.name[: -len(".settings.json")]
        if other == stage or other not in STAGE_SETTINGS:
            continue
        found = _read_record(path, recorded_keys(other))
        diff = [f"{k}={found[k]!r} there, {wanted[k]!r} now" for k in sorted(set(wanted) & set(recorded_keys(other)))
                if k in found and found[k] != wanted[k]]
        if diff:
            raise StaleRunError(
                f"{out_dir} holds a '{other}' stage made with other settings ({'; '.join(diff)}); running "
                f"'{stage}' now would mix the two. Nothing was changed. Use the settings the folder was made "
                f"with, another run folder (--out), or delete {path.name} and the {other} files "
                f"({', '.join(ARTEFACTS[other]) or 'none'}) first.")


def begin(stage: str, settings: dict, model: nn.Module, out_dir: Path) -> dict:
    """Check the run folder against this stage's settings (refuse on any difference), then record them."""
    wanted = fingerprint(stage, settings, model)
    record_path = out_dir / f"{stage}.settings.json"
    if out_dir.is_dir():
        _check_other_records(stage, wanted, out_dir)
    if record_path.exists() and stage not in RECOMPUTED:
        found = _read_record(record_path, wanted)
        if found != wanted:
            diff = [f"{k}={found.get(k)!r} there, {wanted.get(k)!r} now" for k in sorted(set(found) | set(wanted))
                    if found.get(k) != wanted.get(k)]
            raise StaleRunError(
                f"{out_dir} holds a '{stage}' stage made with other settings ({'; '.join(diff)}). "
                f"It is not resumed: use another run folder (--out), or delete {record_path.name} and the "
                f"{stage} files ({', '.join(ARTEFACTS[stage]) or 'none'}) to start that stage afresh.")
        return wanted
    leftovers = [name for name in ARTEFACTS[stage] if (out_dir / name).exists()]
    if leftovers and stage not in RECOMPUTED:
        raise StaleRunError(
            f"{out_dir} holds {', '.join(leftovers)} but no {record_path.name}: made by an older version, "
            "with settings that cannot be checked. Use another run folder, or delete those files.")
    out_dir.mkdir(parents=True, exist_ok=True)
    reporting.write_json(record_path, wanted)
    return wanted


def finished(stage: str, out_dir: Path, metrics_stage: str | None = None) -> dict | None:
    """The stage's record if an earlier run finished it (its first artefact and its metrics exist)."""
    files = ARTEFACTS[stage]
    if files and not (out_dir / files[0]).exists():
        return None
    return reporting.read_metrics(out_dir).get("stages", {}).get(metrics_stage or stage)


def require(out_dir: Path, name: str, stage_to_run: str) -> Path:
    path = out_dir / name
    if not path.exists():
        raise MissingStageError(f"{path} is missing: run {stage_to_run} first.")
    return path


def remove_intermediate(model_dir: Path) -> list[Path]:
    """Delete the checkpoints of stages that have finished (their final artefact exists); the removed paths.

    A finished stage resumes from its final artefact alone, so nothing is lost; an unfinished one
    keeps its checkpoints.
    """
    removed = []
    for final, patterns in INTERMEDIATE.items():
        if (Path(model_dir) / final).is_file():
            for pattern in patterns:
                for path in sorted(Path(model_dir).glob(pattern)):
                    path.unlink()
                    removed.append(path)
    return removed
