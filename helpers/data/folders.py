"""Image folders (``<Class>/<image>``, the Sea Animals photos or the user's own): find the folder,
scan it (unreadable files listed and skipped, exact duplicates dropped), split it once per run."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from PIL import Image

from ..io import atomic_write_text
from .splits import SPLIT_FRACTIONS, DatasetError, DatasetNotFoundError, check_class_counts, stratified_split

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".mpo"}
KAGGLE_HANDLE = "vencerlanz09/sea-animals-image-dataste/versions/5"
SEA_ANIMALS_ENV = "SEA_ANIMALS_DIR"


def resolve_sea_animals_dir(data_dir=None, download=True) -> Path:
    """First found wins: explicit argument, $SEA_ANIMALS_DIR, ``data/sea-animals``, kagglehub download."""
    candidates = [("argument", data_dir), (f"${SEA_ANIMALS_ENV}", os.environ.get(SEA_ANIMALS_ENV)),
                  ("default", Path("data") / "sea-animals")]
    for source, path in candidates:
        if path and Path(path).is_dir() and any(p.is_dir() for p in Path(path).iterdir()):
            return Path(path)
        if source != "default" and path:
            raise DatasetNotFoundError(f"Sea Animals folder {path!s} (from {source}) does not exist or "
                                       "holds no class folders. Point it at the folder holding "
                                       "<Class>/<image> subfolders.")
    if download:
        try:
            import kagglehub

            return unwrap_single_folder(Path(kagglehub.dataset_download(KAGGLE_HANDLE)))
        except Exception as exc:  # no network, no kagglehub, Kaggle refusing: all mean "not here"
            reason = f"{type(exc).__name__}: {exc}"
    else:
        reason = "download disabled"
    raise DatasetNotFoundError(
        "The Sea Animals dataset was not found and could not be downloaded "
        f"({reason}).\nEither download it with `python -c \"import kagglehub; "
        f"print(kagglehub.dataset_download('{KAGGLE_HANDLE}'))\"` (public, no token needed) "
        f"or from https://www.kaggle.com/datasets/vencerlanz09/sea-animals-image-dataste, then put the "
        f"class folders under data/sea-animals/, set ${SEA_ANIMALS_ENV}, or pass --data-dir."
    )


def check_image(path: Path) -> str | None:
    """Return why ``path`` is not a usable image, or None when it decodes completely."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as img:
            img.load()  # a full decode: verify() alone misses truncated JPEGs
        return None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError) for bad files
        return f"{type(exc).__name__}: {exc}"


def unwrap_single_folder(root: Path) -> Path:
    """``root``, or its only subfolder when ``root`` is just a wrapper around the class folders.

    Archives (Kaggle's included) often unpack to ``<root>/<Name>/<Class>/<image>``; used for the
    download only: a folder the user passed is checked by ``scan_folder`` and refused with the fix.
    """
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and _holds_class_folders(entries[0]):
        return entries[0]
    return root


def _holds_class_folders(folder: Path) -> bool:
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return len(subfolders) >= 2 and any(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                                        for sub in subfolders for f in sub.iterdir())


def _unusable_link(path: Path) -> str | None:
    """Why a symlink is not scanned (a loop, a dangling link, a linked folder), or None for a linked file."""
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "symlink loop or dangling symlink"
    return "symlinked folder, not followed" if target.is_dir() else None


def scan_folder(root) -> dict:
    """List every image under ``root/<Class>/``; report unreadable files and exact duplicates.

    Returns ``{"classes", "items": [[relpath, label]], "skipped": [[relpath, reason]],
    "duplicates": [[dropped relpath, kept relpath]]}``. Duplicates keep the first path in sorted order.
    Symlink loops, dangling links and linked folders are listed in ``skipped`` (never followed). A
    folder holding one folder of class folders is refused with the path to pass instead.
    """
    root = Path(root)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    # a linked class folder is used (e.g. classes gathered from several disks); a broken one is listed
    broken = [p for p in entries if _unusable_link(p) == "symlink loop or dangling symlink"]
    skipped = [[p.name, "symlink loop or dangling symlink"] for p in broken]
    classes = [p.name for p in entries if p.is_dir() and p not in broken]
    if not classes:
        raise DatasetNotFoundError(f"{root} holds no class folders; expected {root}/<Class>/<image>.")
    if len(classes) == 1 and _holds_class_folders(root / classes[0]):
        raise DatasetError(f"{root} holds a single folder, {classes[0]}, which itself holds class folders: "
                           f"pass {root / classes[0]} as the data folder instead (--data-dir).")
    items, duplicates, seen = [], [], {}
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            rel = path.relative_to(root).as_posix()
            link_problem = _unusable_link(path)
            if link_problem:
                skipped.append([rel, link_problem])
                continue
            if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            problem = check_image(path)
            if problem:
                skipped.append([rel, problem])
                continue
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            if digest in seen:
                duplicates.append([rel, seen[digest]])
                continue
            seen[digest] = rel
            items.append([rel, label])
    return {"classes": classes, "items": items, "skipped": skipped, "duplicates": duplicates}


def folder_split(root, split_file=None, seed=0, fractions=SPLIT_FRACTIONS) -> dict:
    """Scan + deduplicate + split, reusing ``split_file`` when it exists (one split per run)."""
    root = Path(root)
    if split_file and Path(split_file).exists():
        split = json.loads(Path(split_file).read_text())
        if Path(split["root"]).resolve() != root.resolve() or split["seed"] != seed:
            raise ValueError(f"{split_file} was made for {split['root']} with seed {split['seed']}, not "
                             f"{root} with seed {seed}; use a new run folder or delete the split file.")
        return split
    scan = scan_folder(root)
    labels = [label for _, label in scan["items"]]
    check_class_counts(scan["classes"], labels, fractions, root)
    train, val, test = stratified_split(labels, fractions, seed)
    split = {"root": str(root), "seed": seed, "classes": scan["classes"],
             "skipped": scan["skipped"], "duplicates": scan["duplicates"],
             "train": [scan["items"][i] for i in train], "val": [scan["items"][i] for i in val],
             "test": [scan["items"][i] for i in test]}
    if split_file:
        atomic_write_text(split_file, json.dumps(split, indent=1))
    return split
