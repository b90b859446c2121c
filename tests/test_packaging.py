"""pyproject.toml declares what the commands need and the console scripts point at real entry points."""

import importlib
import re
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def declared() -> set[str]:
    return {re.split(r"[<>=!~; \[]", d, maxsplit=1)[0].lower() for d in PROJECT["dependencies"]}


def test_console_scripts_point_at_main_functions():
    assert {"dc-run", "dc-evaluate"} <= set(PROJECT["scripts"])
    for target in PROJECT["scripts"].values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_the_commands_third_party_imports_are_declared_and_installed():
    # import name -> distribution, for what helpers.run / helpers.evaluate and the notebooks import
    needed = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow",
              "sklearn": "scikit-learn", "matplotlib": "matplotlib", "tqdm": "tqdm", "kagglehub": "kagglehub",
              "papermill": "papermill", "nbformat": "nbformat", "ipykernel": "ipykernel"}
    assert set(needed.values()) <= declared(), set(needed.values()) - declared()
    for name in declared():
        metadata.version(name)  # raises PackageNotFoundError when a declared dependency is not installable here


def test_requirements_pins_satisfy_the_declared_ranges():
    pins = dict(re.match(r"([A-Za-z0-9_-]+)==([\w.]+)", line).groups()
                for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line)
    for dist, version in pins.items():
        spec = next(d for d in PROJECT["dependencies"] if d.lower().startswith(dist.lower()))
        low = re.search(r">=([\d.]+)", spec).group(1)
        assert tuple(map(int, version.split("."))) >= tuple(map(int, low.split("."))), (dist, version, spec)
