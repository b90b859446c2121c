"""Pruning (paper §2): per-layer sensitivity and the kept-weight budget (``sensitivity``), magnitude
masks that keep pruned weights at zero through training (``pruning``), and the inputs of units no
later layer reads (``dead_units``). The stages that use them are ``helpers.pipeline.prune_stages``."""
