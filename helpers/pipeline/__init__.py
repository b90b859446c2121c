"""The pipeline: the stages as resumable functions and ``compress`` for any model (``stages``), the
pruning stages (``prune_stages``), the run-folder records (``resume``), profiles (``config``) and
their checks (``validation``, ``preflight``), the run-folder lock (``lock``) and progress lines
(``progress``). The notebooks call the stages as ``pipeline.train_baseline(...)`` and so on.
"""

from .prune_stages import dense_control, plan_pruning, prune_and_retrain
from .resume import MissingStageError, StaleRunError
from .stage_common import MIN_PRUNABLE_WEIGHTS, prunable_layers, scan_loader
from .stages import bits_sweep, compress, encode, int8_baseline, quantize, settings_for, train_baseline

__all__ = ["train_baseline", "plan_pruning", "prune_and_retrain", "dense_control", "quantize", "bits_sweep",
           "int8_baseline", "encode", "compress", "settings_for", "prunable_layers", "scan_loader",
           "MIN_PRUNABLE_WEIGHTS", "MissingStageError", "StaleRunError"]
