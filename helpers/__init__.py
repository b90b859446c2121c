"""Deep Compression helpers: one concept per module.

Importing this package has no side effects; nothing heavy is imported until used.
"""

__all__ = ["load_compressed", "save_compressed"]


def load_compressed(path, map_location="cpu", *, model=None):
    """Rebuild an ``nn.Module`` from a compressed model file (see ``helpers.fileformat``).

    ``model``: a fresh instance of the file's architecture, needed when it is your own class (the
    paper's networks and torchvision's rebuild themselves).
    """
    from .fileformat import load_compressed as _load

    return _load(path, map_location=map_location, model=model)


def save_compressed(model, path, **kwargs):
    """Write a pruned + quantized model as a compressed file (see ``helpers.fileformat``)."""
    from .fileformat import save_model as _save

    return _save(model, path, **kwargs)
