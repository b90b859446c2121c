"""Classify images with a compressed model file: ``dc-predict FILE IMAGE_OR_FOLDER... [--top 5] [--json]``.

    dc-predict zoo/efficientnet_lite0-sea-animals.dcz photo.jpg more_photos/

The file carries everything needed besides the pixels: the architecture, the class names, the input
size and the normalization its weights expect. Images are resized (shorter side) and center-cropped
to that size, as in evaluation. The model runs on the sparse runtime (``helpers.runtime.sparse``) on CPU, in
batches, so a folder of thousands of photos needs no more memory than one batch. A folder is searched
recursively for image files; a file that cannot be read is reported with the reason, and the others
are still classified (the exit status is then 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image

from . import data


def find_images(paths) -> list[Path]:
    """The named files, and every image file under the named folders (sorted); missing paths raise."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in data.IMAGE_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither an image file nor a folder.")
    return found


def read_image(path: Path, channels: int) -> Image.Image:
    """The decoded image in the model's colour mode (RGB, or L for one channel); raises if unreadable."""
    return data.open_image(path, "RGB" if channels == 3 else "L")


def top_classes(probabilities: torch.Tensor, class_names, k: int) -> list[list[dict]]:
    """Each row's ``k`` most probable classes as ``{"class", "probability"}``, most probable first."""
    values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [[{"class": class_names[i], "probability": float(p)} for p, i in zip(row_p, row_i.tolist())]
            for row_p, row_i in zip(values, indices)]


def load_for_prediction(file, runtime: str = "sparse"):
    """The file's model in eval mode, its metadata checked, and the transform its inputs need."""
    from . import load_compressed
    from .evaluate import check_metadata

    model = load_compressed(file, runtime=runtime).eval()
    meta = check_metadata(getattr(model, "metadata", None) or {}, model.create_args, file)
    transform = data.make_transforms(meta["image_size"], meta["mean"], meta["std"], train=False)
    return model, meta, transform


@torch.no_grad()
def predict_files(file, paths, top: int = 5, batch_size: int = 32, runtime: str = "sparse") -> list[dict]:
    """One result per image: ``{"file", "top": [{"class", "probability"}, ...]}`` or ``{"file", "error"}``."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    images = find_images(paths)
    model, meta, transform = load_for_prediction(file, runtime)
    channels = model.create_args["in_channels"]
    results = []
    for start in range(0, len(images), batch_size):
        batch, names = [], []
        for path in images[start:start + batch_size]:
            try:
                batch.append(transform(read_image(path, channels)))
                names.append(path)
            except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ...) for bad files
                results.append({"file": str(path), "error": f"not a readable image ({type(exc).__name__}: {exc})"})
        if batch:
            probabilities = torch.softmax(model(torch.stack(batch)).float(), dim=1)
            results += [{"file": str(p), "top": t} for p, t in zip(names, top_classes(probabilities,
                                                                                       meta["class_names"], top))]
    order = {str(p): i for i, p in enumerate(images)}
    return sorted(results, key=lambda r: order[r["file"]])


def format_result(result: dict) -> str:
    if "error" in result:
        return f"{result['file']}: error: {result['error']}"
    return f"{result['file']}: " + ", ".join(f"{t['class']} {t['probability']:.1%}" for t in result["top"])


def main(argv=None) -> int:
    from .coding.fileformat import CompressedFileError

    parser = argparse.ArgumentParser(prog="dc-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="a compressed model file (.dcz)")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--top", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runtime", default="sparse", choices=("sparse", "dense"))
    args = parser.parse_args(argv)
    if not Path(args.file).is_file():
        parser.error(f"{args.file} is not a file")
    if args.top < 1 or args.batch_size < 1:
        parser.error("--top and --batch-size must be at least 1")
    try:
        results = predict_files(args.file, args.images, args.top, args.batch_size, args.runtime)
    except (CompressedFileError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for result in results:
            print(format_result(result), file=sys.stderr if "error" in result else sys.stdout)
    if not results:
        print("error: no image files found", file=sys.stderr)
        return 2
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
