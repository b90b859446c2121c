"""Deep Compression helpers: one concept per module.

Importing this package has no side effects; nothing heavy is imported until used.
"""

__all__ = ["compress", "load_compressed", "save_compressed"]


def compress(model, train_loader, val_loader, out_dir, **kwargs) -> dict:
    """Deep Compression of any Conv2d/Linear model into a file in ``out_dir`` (see ``helpers.pipeline.compress``).

    ``helpers.compress(model, train_loader, val_loader, "runs/mine", test_loader=test_loader,
    profile="cpu", trained=True, epochs=..., target_kept=...)`` returns ``{"file": ..., "stages": ...}``.
    """
    from .pipeline.stages import compress as _compress

    return _compress(model, train_loader, val_loader, out_dir, **kwargs)


def load_compressed(path, map_location="cpu", *, model=None, runtime="dense"):
    """Rebuild an ``nn.Module`` from a compressed model file (see ``helpers.coding.fileformat``).

    ``model``: a fresh instance of the file's architecture, needed when it is your own class (the
    paper's networks and torchvision's rebuild themselves). ``runtime``: "dense" (the trainable
    quantized model) or "sparse" (inference-only, survivors kept compressed: see ``helpers.runtime.sparse``).
    """
    if runtime not in ("dense", "sparse"):
        raise ValueError(f"runtime={runtime!r}: use 'dense' or 'sparse'")
    if runtime == "sparse":
        from .runtime.sparse import load_sparse

        return load_sparse(path, map_location, model=model)
    from .coding.fileformat import load_compressed as _load

    return _load(path, map_location=map_location, model=model)


def save_compressed(model, path, **kwargs):
    """Write a pruned + quantized model as a compressed file (see ``helpers.coding.fileformat``)."""
    from .coding.fileformat import save_model as _save

    return _save(model, path, **kwargs)
