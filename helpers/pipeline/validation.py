"""Types and ranges of every profile setting, checked before any work starts.

``check_settings(settings, model)`` checks one model's resolved settings (what
``config.Profile.for_model`` returns); ``check_overrides(fields, overrides)`` checks a run's overrides
at the profile level (field names, the keys of per-model dicts, each entry's value). Both collect every
problem and raise one ``SettingsError`` listing them, each naming the field, the bad value and what is
allowed, so that ``--set epochs="3" batch_size=0`` is refused in one message before the first notebook
runs (the runner checks every model of the run in well under a second, plus ~1 s to import
torchvision when a per-model key is not one of the paper's four names).

Booleans are not integers here (``epochs=true`` is refused) and floats are not integers
(``epochs=1.5`` is refused), although Python accepts both in ``range``.
"""

from __future__ import annotations

import math


class SettingsError(ValueError):
    """A profile setting or override has the wrong type or range; the message says what is allowed."""


def _is_int(value) -> bool:
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _describe(value) -> str:
    kind = {bool: "a boolean", str: "a string", float: "a float", int: "an integer", list: "a list",
            dict: "a dict", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


def integer(low, high=None):
    allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return (lambda v: _is_int(v) and v >= low and (high is None or v <= high)), allowed


def number(low, high, low_open=False, high_open=False):
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    allowed = f"a number in {lo}{low}, {high if high is not None else 'inf'}{hi}"

    def ok(v):
        return (_is_number(v) and (v > low if low_open else v >= low)
                and (high is None or (v < high if high_open else v <= high)))
    return ok, allowed


def optional(rule, meaning: str = "no cap"):
    ok, allowed = rule
    return (lambda v: v is None or ok(v)), f"null ({meaning}) or {allowed}"


def one_of(choices):
    return (lambda v: isinstance(v, str) and v in choices), "one of " + ", ".join(repr(c) for c in choices)


BOOLEAN = (lambda v: isinstance(v, bool)), "true or false"
SPLITS = ("train", "val", "test")


def _per_class_ok(value) -> bool:
    return isinstance(value, dict) and set(value) <= set(SPLITS) and \
        all(v is None or (_is_int(v) and v >= 1) for v in value.values())


def _sparsities_ok(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and \
        all(_is_number(s) and 0 < s < 1 for s in value)


def rules() -> dict:
    """Field -> (predicate, what is allowed). Every key ``Profile.for_model`` returns has one."""
    from ..prune.sensitivity import ALLOCATIONS
    from ..placement import PRECISIONS
    from ..quantize.bit_allocation import BIT_ALLOCATIONS

    return {
        "image_size": integer(1, 4096),
        "pretrained": (lambda v: isinstance(v, bool) or (isinstance(v, str) and v != ""),
                       "true, false or the path of a state_dict file (--set weights=PATH)"),
        "weights": ((lambda v: v is None or (isinstance(v, str) and v != "")),
                    "null or the path of a state_dict file to start from"),
        "per_class": (_per_class_ok, 'a dict of images per class and split, e.g. {"train": 20, "val": 5, '
                      '"test": 5} (each an integer >= 1 or null; {} keeps every image)'),
        "epochs": integer(1),
        "batch_size": integer(1),
        "lr": number(0, None, low_open=True),
        "weight_decay": number(0, None),
        "warmup_epochs": integer(0),
        "num_workers": integer(0),
        "cache_images": BOOLEAN,
        "eval_batches": optional(integer(1)),
        "sensitivity_sparsities": (_sparsities_ok, "a non-empty list of sparsities, each a number in (0, 1), "
                                   "e.g. [0.5, 0.9, 0.95]"),
        "sensitivity_tolerance": number(0, 1, high_open=True),
        "target_kept": number(0, 1, low_open=True),
        "budget_allocation": one_of(ALLOCATIONS),
        "prune_rounds": integer(1),
        "dense_control": BOOLEAN,
        "retrain_epochs": integer(1),
        "retrain_lr_factor": number(0, None, low_open=True),
        "extra_rounds": integer(0),
        "remove_dead_units": BOOLEAN,
        "extra_keep": number(0, 1, low_open=True, high_open=True),
        "stop_tolerance": number(0, 1, high_open=True),
        "stop_loss_tolerance": optional(number(0, None)),
        "stop_z": optional(number(0, 10)),
        "bit_allocation": one_of(BIT_ALLOCATIONS),
        "compact_storage": BOOLEAN,
        "bits_tolerance": number(0, 1, high_open=True),
        "bits_loss_tolerance": optional(number(0, None)),
        "min_bits": integer(1, 16),
        "conv_bits": integer(1, 16),
        "fc_bits": integer(1, 16),
        "depthwise_bits": optional(integer(1, 16), "conv_bits"),
        "quant_epochs": integer(1),
        "quant_lr_factor": number(0, None, low_open=True),
        "distill_weight": number(0, 1),
        "distill_temperature": number(0, 100, low_open=True),
        "world_size": integer(1, 4096),
        "precision": one_of(PRECISIONS),
        "threads": optional(integer(1, 1024)),
        "channels_last": BOOLEAN,
    }


MAX_SEED = 2 ** 32 - 1  # numpy's generators take seeds below 2**32


def check_seed(seed) -> int:
    """``seed`` when it is an integer every generator of the run accepts, else ``SettingsError``."""
    if isinstance(seed, bool) or not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise SettingsError(f"seed = {_describe(seed)} is not allowed: use an integer from 0 to {MAX_SEED}.")
    return int(seed)


def _problem(field, value, allowed, where="") -> str:
    return f"{field}{where} = {_describe(value)} is not allowed: use {allowed}."


def check_settings(settings: dict, model: str | None = None) -> dict:
    """``settings`` unchanged when every field has the right type and range, else ``SettingsError``.

    ``model`` (default ``settings["model_name"]`` if present) adds the architecture's smallest input
    side to the ``image_size`` check. Fields without a rule (added by a newer profile) pass through.
    """
    from ..models import min_image_size

    if not isinstance(settings, dict):
        raise SettingsError(f"settings must be a dict of profile fields, got {_describe(settings)}.")
    model = model or settings.get("model_name")
    problems = []
    for field, (ok, allowed) in rules().items():
        if field in settings and not ok(settings[field]):
            problems.append(_problem(field, settings[field], allowed))
    size = settings.get("image_size")
    if model and _is_int(size) and size < min_image_size(model):
        problems.append(f"image_size = {size} is too small for {model}: it needs at least "
                        f"{min_image_size(model)} px.")
    if model and "pretrained" in settings and rules()["pretrained"][0](settings["pretrained"]):
        from ..models import pretrained_problem

        if (problem := pretrained_problem(model, settings["pretrained"])) is not None:
            problems.append(problem)
    if problems:
        raise SettingsError(_message(problems, model))
    return settings


def check_overrides(fields: dict, overrides, per_model_keys) -> dict:
    """``overrides`` unchanged when they fit a profile whose fields are ``fields`` (``Profile.to_dict()``).

    ``per_model_keys(key) -> bool`` says whether a key of a per-model dict names a model.
    """
    if not isinstance(overrides, dict):
        raise SettingsError(f"overrides must be a dict of profile fields, e.g. {{\"retrain_epochs\": 15}}, "
                            f"got {_describe(overrides)}.")
    known = [k for k in fields if k != "name"]
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise SettingsError(f"Unknown profile field(s) {unknown}; fields are {', '.join(known)}.")
    table, problems = rules(), []
    for field, value in overrides.items():
        ok, allowed = table.get(field, (lambda v: True, ""))
        per_model = isinstance(fields[field], dict) and field != "per_class"
        if per_model and isinstance(value, dict):
            bad_keys = [k for k in value if not per_model_keys(k)]
            if bad_keys:
                problems.append(f"{field}: {bad_keys} name no model; per-model keys are lenet300, lenet5, "
                                "alexnet, vgg16, default (every other model) or a torchvision model name.")
            problems += [_problem(field, v, allowed, f"[{k!r}]") for k, v in value.items() if not ok(v)]
        elif isinstance(value, dict) and field != "per_class":
            problems.append(f"{field} = {_describe(value)} is not allowed: {field} applies to every model; "
                            f"use {allowed}.")
        elif not ok(value):
            problems.append(_problem(field, value, allowed))
    if problems:
        raise SettingsError(_message(problems))
    return overrides


def _message(problems, model=None) -> str:
    head = f"Bad setting(s){f' for {model}' if model else ''}:"
    return head + "".join(f"\n  - {p}" for p in problems) + \
        "\nChange them with --set FIELD=VALUE (JSON), or in the notebook's overrides."
