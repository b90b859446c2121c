"""Evaluate a compressed model file on a dataset: for users who receive only the file.

    python -m helpers.evaluate runs/sea-cpu/alexnet/model.dcz --dataset sea-animals --data-dir DIR

The file carries its class names, input size and normalization; dataset classes are matched to the
file's classes by name (images of classes the model does not know are left out and reported). The
split is recomputed from the data with the file's seed, or read from a run's ``split.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from . import data, training
from .io import atomic_write_text


class RelabeledDataset(Dataset):
    """The items of ``base`` whose label maps to a class of the model, relabeled to its index."""

    def __init__(self, base, mapping: dict[int, int]):
        self.base = base
        self.indices = [i for i, t in enumerate(base.targets) if t in mapping]
        self.targets = [mapping[base.targets[i]] for i in self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        x, _ = self.base[self.indices[i]]
        return x, self.targets[i]


def class_mapping(dataset_classes: list[str], model_classes: list[str]) -> tuple[dict[int, int], list[str]]:
    """Dataset label -> model label for classes with the same name; and the dataset's unknown classes."""
    position = {name: i for i, name in enumerate(model_classes)}
    mapping = {i: position[name] for i, name in enumerate(dataset_classes) if name in position}
    unknown = [name for name in dataset_classes if name not in position]
    return mapping, unknown


def check_metadata(meta: dict, create_args: dict, path) -> dict:
    """``meta`` when it describes the model's inputs and outputs consistently, else ``ValueError``.

    The file format already checked each key's type and range; this checks they agree with the
    model the file builds (a file whose class list is longer than the model's outputs would report
    accuracies for classes it cannot predict).
    """
    missing = [k for k in ("class_names", "image_size", "mean", "std") if k not in meta]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)} in its metadata; it was not written by "
                         "notebook 06, so its inputs are unknown.")
    outputs = create_args.get("num_classes")
    if outputs is not None and outputs != len(meta["class_names"]):
        raise ValueError(f"{path} names {len(meta['class_names'])} classes but its model has {outputs} "
                         "outputs; the file's metadata does not belong to its model.")
    built = create_args.get("image_size")
    if built is not None and built != meta["image_size"]:
        raise ValueError(f"{path} says its inputs are {meta['image_size']} px but its model was built for "
                         f"{built} px; the file's metadata does not belong to its model.")
    if isinstance(meta.get("seed", 0), bool) or not isinstance(meta.get("seed", 0), int):
        raise ValueError(f"{path}: the split seed in its metadata is {meta['seed']!r}, not an integer.")
    return meta


def evaluate_file(path, dataset: str, data_dir=None, split: str = "test", split_file=None,
                  batch_size: int = 128, device=None, per_class: int | None = None) -> dict:
    """Top-1/top-5 of the model in ``path`` on ``dataset``'s ``split`` (``test`` or ``all``).

    ``per_class`` caps each split at that many images per class, as the ``ci`` profile does.
    """
    from . import load_compressed

    if split not in ("test", "all"):
        raise ValueError(f"split must be 'test' or 'all', got {split!r}.")
    model = load_compressed(path)  # checks the metadata's types and ranges (helpers.coding.fileformat)
    meta = check_metadata(getattr(model, "metadata", None) or {}, model.create_args, path)
    splits = data.load_splits(dataset, data_dir, meta["image_size"], split_file=split_file,
                              seed=meta.get("seed", 0), mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                              augment=False, per_class=dict.fromkeys(("train", "val", "test"), per_class))
    if splits.in_channels != model.create_args["in_channels"]:
        raise ValueError(f"{dataset} images have {splits.in_channels} channel(s), the model expects "
                         f"{model.create_args['in_channels']}.")
    mapping, unknown = class_mapping(splits.class_names, list(meta["class_names"]))
    if not mapping:
        raise ValueError(f"none of {dataset}'s classes {splits.class_names[:5]}... is a class of the model "
                         f"({list(meta['class_names'])[:5]}...); is this the right dataset?")
    parts = [splits.test] if split == "test" else [splits.train, splits.val, splits.test]
    parts = [RelabeledDataset(p, mapping) for p in parts]
    evaluated = torch.utils.data.ConcatDataset(parts)
    device = device or training.pick_device()
    stats = training.evaluate(model.to(device), data.loader(evaluated, batch_size), device)
    return {"file": str(path), "file_bytes": Path(path).stat().st_size, "dataset": dataset, "split": split,
            "n": stats["n"], "test_accuracy": stats["top1"], "test_top5": stats["top5"],
            "unknown_classes": unknown, "model": model.create_args["name"]}


def main(argv=None) -> int:
    from .coding.fileformat import CompressedFileError

    parser = argparse.ArgumentParser(prog="python -m helpers.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="a compressed model file (.dcz) written by notebook 06")
    parser.add_argument("--dataset", required=True, choices=data.DATASETS)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--split", default="test", choices=("test", "all"))
    parser.add_argument("--split-file", default=None, help="a run's split.json (default: recompute)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the results here")
    args = parser.parse_args(argv)
    if not Path(args.file).is_file():
        parser.error(f"{args.file} is not a file")
    try:
        result = evaluate_file(args.file, args.dataset, args.data_dir, args.split, args.split_file,
                               args.batch_size)
    except (CompressedFileError, data.DatasetNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{result['model']} from {result['file']} ({result['file_bytes']:,} bytes) on {result['dataset']} "
          f"{result['split']} ({result['n']} images): top-1 {result['test_accuracy']:.2%}, "
          f"top-5 {result['test_top5']:.2%}")
    if result["unknown_classes"]:
        print(f"left out images of classes the model does not know: {result['unknown_classes']}")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
