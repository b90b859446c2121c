"""Profiles for a run: pick one by name, change fields for one run, check the result.

The fields and their commented defaults are ``fields.Profile``; the named profiles (``ci``, ``cpu``,
``gpu``, ``paper``, ``transfer``) and the measurements behind their values are ``profiles.PROFILES``.
``get_profile`` / ``apply_overrides`` / ``settings_for`` / ``resolve_settings`` turn them into one
model's checked settings; ``default_profile()`` follows the device. This module re-exports the names
the notebooks and tests use (``config.Profile``, ``config.PROFILES``, ``config.DEFAULT_KEY``, ...).
"""

from __future__ import annotations

from dataclasses import replace

from .fields import DEFAULT_KEY, NATIVE_SIZE, Profile, _per_model, for_model_value  # noqa: F401 (config's API)
from .profiles import PROFILES
from .validation import SettingsError, check_overrides, check_seed, check_settings  # noqa: F401 (config's API)


def get_profile(name: str | None = None, **overrides) -> Profile:
    """A named profile (None = the device's default), with any field overridden; a plain value for a
    per-model field sets it for every model (``get_profile("cpu", extra_rounds=3)``)."""
    name = name or default_profile()
    if name not in PROFILES:
        raise SettingsError(f"Unknown profile {name!r}; choose one of {', '.join(PROFILES)}.")
    base = PROFILES[name]
    for key, value in overrides.items():
        if isinstance(getattr(base, key, None), dict) and key != "per_class" and not isinstance(value, dict):
            overrides[key] = {DEFAULT_KEY: value}
    return replace(base, **overrides) if overrides else base


def default_profile() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def apply_overrides(profile: Profile, model: str, overrides: dict | None) -> Profile:
    """``profile`` with some fields changed. A plain value for a per-model field sets it for ``model``.

    ``{"retrain_epochs": 15, "target_kept": 0.08}`` changes two fields for the model being run;
    ``{"epochs": {"lenet5": 40}}`` changes one model's entry and keeps the others.
    """
    if not overrides:
        return profile
    fields = profile.to_dict()
    check_overrides(fields, overrides, is_model_key)
    changes = {}
    for key, value in overrides.items():
        current = fields[key]
        if isinstance(current, dict) and key != "per_class":  # per-model fields
            changes[key] = {**current, **(value if isinstance(value, dict) else {model: value})}
        elif isinstance(current, tuple):
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return replace(profile, **changes)


def is_model_key(key) -> bool:
    """Whether ``key`` may key a per-model field: the paper's four, ``"default"``, or a registry name."""
    from ..models import is_known

    return key in _per_model(*"abcd") or is_known(key)


def settings_for(profile: str | None, model: str, dataset: str = "sea-animals", overrides=None) -> dict:
    """One model's checked settings (``Profile.for_model`` after the overrides); ``SettingsError`` if bad."""
    from ..data import DATASETS

    if dataset not in DATASETS:
        raise SettingsError(f"dataset = {dataset!r} is unknown; choose one of {', '.join(DATASETS)}.")
    if not is_model_key(model) or model == DEFAULT_KEY:
        raise SettingsError(f"model {model!r} is unknown; choose lenet300, lenet5, alexnet, vgg16 or a "
                            "torchvision classification model by name.")
    prof = apply_overrides(get_profile(profile), model, overrides)
    settings = prof.for_model(model, dataset)
    # an image size asked for explicitly is honoured as asked (or refused by check_settings if too
    # small), never replaced by a dataset's native size or raised to the model's smallest input
    asked = (overrides or {}).get("image_size")
    asked = asked.get(model, asked.get(DEFAULT_KEY)) if isinstance(asked, dict) else asked
    if asked is not None:
        settings["image_size"] = asked
    return check_settings(settings, model)


def resolve_settings(dataset="", data_dir="", model_name="", profile="", run_dir="", seed=0,
                     overrides=None) -> dict:
    """Fill a notebook's ``parameters`` cell: empty values fall back to environment variables.

    $DC_DATASET, $DC_DATA_DIR (or $SEA_ANIMALS_DIR), $DC_MODEL, $DC_PROFILE, $DC_RUN_DIR and
    $DC_OVERRIDES (a JSON object of profile fields) let nbval run the committed notebooks on any
    data; papermill passes the values explicitly instead.
    """
    import json
    import os
    from pathlib import Path

    dataset = dataset or os.environ.get("DC_DATASET", "sea-animals")
    data_dir = data_dir or os.environ.get("DC_DATA_DIR") or None
    model_name = model_name or os.environ.get("DC_MODEL", "lenet5")
    if not overrides and os.environ.get("DC_OVERRIDES"):
        try:
            overrides = json.loads(os.environ["DC_OVERRIDES"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"$DC_OVERRIDES is not valid JSON ({exc}); "
                             'write it like \'{"retrain_epochs": 15}\'.') from None
    overrides = dict(overrides or {})
    check_seed(seed)
    profile = profile or os.environ.get("DC_PROFILE") or default_profile()
    checked = settings_for(profile, model_name, dataset, overrides)  # before any folder is made
    run_dir = Path(run_dir or os.environ.get("DC_RUN_DIR") or "../runs/notebook")
    model_dir = run_dir / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    if checked["threads"] is not None:  # a notebook's setup: the profile's thread count for this kernel
        import torch

        torch.set_num_threads(checked["threads"])
    from .. import placement

    placement.set_channels_last(checked["channels_last"])  # process-wide, like the thread count
    return {"dataset": dataset, "data_dir": data_dir, "model_name": model_name, "profile": profile,
            "overrides": overrides, "run_dir": run_dir, "model_dir": model_dir,
            "split_file": run_dir / "split.json", "seed": int(seed), **checked}
