"""The fields of a profile: one frozen dataclass of commented defaults (``Profile``), and how a
per-model field picks one model's value. The named profiles are in ``profiles.py``; reading them for
a run (overrides, checks) is ``config.py``.

Per-model fields are dicts keyed by model name; their ``"default"`` entry serves every other model
(torchvision's by name, or a user's own module compressed with ``helpers.compress``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..models import min_image_size
from ..prune.sensitivity import ALLOCATIONS
from .validation import SettingsError

NATIVE_SIZE = {"mnist": 28, "fashion-mnist": 28, "digits": 8}  # grayscale sets keep their own size
DEFAULT_KEY = "default"  # a per-model field's entry for models without their own


def _per_model(lenet300, lenet5, alexnet, vgg16, default=None) -> dict:
    """The paper's four networks, and ``default`` (the AlexNet value if not given) for any other."""
    return {"lenet300": lenet300, "lenet5": lenet5, "alexnet": alexnet, "vgg16": vgg16,
            DEFAULT_KEY: alexnet if default is None else default}


def for_model_value(per_model: dict, model: str):
    """One model's entry of a per-model field (its own, else the default entry)."""
    return per_model[model] if model in per_model else per_model[DEFAULT_KEY]


@dataclass(frozen=True)
class Profile:
    name: str
    image_size: dict = field(default_factory=dict)   # per model, for photo datasets (px, square)
    # start from ImageNet weights (helpers.models.create(pretrained=True)), per model; the classifier
    # head is replaced. ``weights``: a local state_dict file to start from instead (any registry model)
    pretrained: dict = field(default_factory=lambda: _per_model(False, False, False, False, False))
    weights: str | None = None
    per_class: dict = field(default_factory=dict)    # cap per class and split, e.g. {"train": 20}; {} = all
    epochs: dict = field(default_factory=dict)       # baseline training epochs per model
    batch_size: dict = field(default_factory=dict)   # per model
    lr: dict = field(default_factory=dict)           # peak SGD learning rate per model (cosine decay)
    weight_decay: float = 5e-4
    warmup_epochs: int = 0
    num_workers: int = 0                             # DataLoader workers; 0 keeps 2-core runs simple
    cache_images: bool = True                        # keep decoded, shrunk photos in memory (small sizes)
    # cap on validation batches in scans, per model (cost control; None = the whole split)
    eval_batches: dict = field(default_factory=lambda: _per_model(None, None, None, None, None))
    # pruning (notebooks 03-04)
    # fine steps where a big fc layer's kept share moves the file size most (0.93 -> 0.95 removes
    # 29% of what is left), so a kept-weight budget is met with less pruning elsewhere
    sensitivity_sparsities: tuple = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
    sensitivity_tolerance: float = 0.02              # accuracy a single layer's pruning may cost in the scan
    # budget of kept weights (fraction) the per-layer targets must meet: the paper keeps 8% (LeNets),
    # 11% (AlexNet), 7.5% (VGG16); a little less leaves room for the file's headers and code tables
    # (other models: BatchNorm CNNs such as ResNets have little redundancy in fc layers, so 15%)
    target_kept: dict = field(default_factory=lambda: _per_model(0.075, 0.075, 0.08, 0.06, 0.15))
    # how the budget is split among layers: "tolerance" (the largest sparsity within one accuracy
    # tolerance for every layer, the tolerance raised until the budget is met) or "cost_per_weight"
    # (greedily, the pruning steps that cost the least accuracy per weight removed)
    budget_allocation: dict = field(default_factory=lambda: _per_model(*["tolerance"] * 4, "cost_per_weight"))
    prune_rounds: int = 4                            # prune -> retrain rounds toward the targets
    # also train the dense control: the baseline given the same retraining rounds with nothing pruned,
    # so "no loss" is measured against a model trained as long (notebook 04; costs the rounds again)
    dense_control: bool = False
    retrain_epochs: dict = field(default_factory=lambda: _per_model(15, 15, 2, 1, 2))  # per round
    retrain_lr_factor: float = 0.3                   # retraining lr = baseline lr x this (paper: lower lr)
    # past the plan: up to extra_rounds more rounds, each keeping extra_keep of every pruned layer's
    # survivors, while validation after retraining stays within stop_tolerance (a fraction) of the
    # baseline's; the first round below it is undone and ends pruning (0 rounds: the plan only).
    # Both models are compared on the same validation images (helpers.prune.stopping): with stop_z
    # set, a round is undone only when its paired difference is more than stop_z standard errors
    # below -stop_tolerance (a loss the validation set shows beyond its noise); None: the point
    # estimate alone, which ~1,700 images cannot tell from noise at 0.5 points
    # after the last round, prune the incoming weights of units no later layer reads (lossless,
    # checked bit for bit on a batch; helpers.prune.dead_units)
    remove_dead_units: bool = True
    extra_rounds: dict = field(default_factory=lambda: _per_model(0, 0, 0, 0))      # per model
    extra_keep: dict = field(default_factory=lambda: _per_model(0.8, 0.8, 0.8, 0.8))  # per model
    stop_tolerance: dict = field(default_factory=lambda: _per_model(0.0, 0.0, 0.0, 0.0))  # per model
    stop_z: dict = field(default_factory=lambda: _per_model(None, None, None, None))  # per model
    # and, when set, validation loss at most (1 + this) x the baseline's: loss moves before accuracy
    stop_loss_tolerance: dict = field(default_factory=lambda: _per_model(None, None, None, None))
    # trained quantization (notebook 05)
    conv_bits: int = 8
    fc_bits: int = 5
    # depthwise convolutions (one filter per channel, MobileNet/EfficientNet) at their own width; None:
    # conv_bits. Each channel's 9 or 25 weights have their own scale, so one codebook serves them
    # worse: at 6 bits everywhere, the 9b1176f Lite0 pruned model fell from 80.67 % to 68.79 %
    # validation before fine-tuning, with its 16 depthwise layers at 8 bits to 76.59 %, for 2.6 %
    # more bytes (benchmarks/bench_depthwise_bits.py); after the centroids' fine-tuning both ended at
    # the same validation accuracy (measured once), so no profile sets it
    depthwise_bits: int | None = None
    # "fixed": conv_bits / fc_bits everywhere (the paper); "greedy": narrow each layer's width, largest
    # layer first, while validation accuracy (before fine-tuning) stays within bits_tolerance
    # of the fixed widths' (helpers.quantize.bit_allocation), down to min_bits
    bit_allocation: dict = field(default_factory=lambda: _per_model(*["fixed"] * 5))
    # after fine-tuning, round codebooks and normalization tensors to float16 and biases to int8 x 2**e,
    # each kept only when validation accuracy does not drop (helpers.quantize.compact): ~1.7 KB of a
    # ~20 KB LeNet-5 file, ~168 KB (BatchNorm) of EfficientNet-Lite0's 1.66 MB
    compact_storage: bool = True
    bits_tolerance: float = 0.005
    # and, when set, while validation loss stays within (1 + bits_loss_tolerance) x the fixed widths':
    # the loss sees a narrower layer's harm that the accuracy, counted in whole images, may not
    bits_loss_tolerance: float | None = None
    min_bits: int = 2
    quant_epochs: dict = field(default_factory=lambda: _per_model(2, 2, 1, 1, 1))
    quant_lr_factor: float = 0.01                    # centroid fine-tuning lr = baseline lr x this
    # knowledge distillation (helpers.training.distillation_loss): the pruning rounds, the dense control and the
    # centroid fine-tuning learn from the fine-tuned baseline's softened outputs as well as from the
    # labels, with this weight on the teacher (0 = labels only, the paper) at this temperature
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    # data-parallel processes for the training stages (torch.distributed; 1 = this process only)
    world_size: int = 1
    # autocast in training and evaluation: "auto" (bf16, else fp16, on CUDA; fp32 elsewhere),
    # "fp32", "bf16" (also on a CPU: runs the gpu profile's path there), "fp16" (CUDA only)
    precision: str = "auto"
    # torch's intra-op threads (None: torch's default, one per core). Tiny models gain nothing from a
    # second thread and lose much when the cores are shared: 40 LeNet-5 steps on 16 px digits took
    # 0.9 s with 1 thread and 16.5 s with 2 on this 2-core machine under a load average of 11
    threads: int | None = None
    # image batches reach the model channels-last (NHWC; ``helpers.placement``): a Lite0 training
    # step at 160 px 1.62x faster, MobileNetV3-small's 1.73x, AlexNet's and VGG16's the same
    # (benchmarks/bench_channels_last.py, commit 0e77538). Off by default so that the results
    # measured before it existed reproduce to the bit (results differ in their last bits with it)
    channels_last: bool = False

    def for_model(self, model: str, dataset: str = "sea-animals") -> dict:
        """The settings one notebook needs for one model on one dataset."""
        pick = lambda per_model: for_model_value(per_model, model)
        if pick(self.budget_allocation) not in ALLOCATIONS:
            raise SettingsError(f"budget_allocation {pick(self.budget_allocation)!r} for {model} is unknown; "
                             f"choose one of {', '.join(ALLOCATIONS)}.")
        size = NATIVE_SIZE.get(dataset, pick(self.image_size))
        size = max(size, min_image_size(model))  # e.g. digits (8 px) are upscaled for LeNet-5
        return {"image_size": size, "pretrained": self.weights or pick(self.pretrained),
                "per_class": dict(self.per_class), "epochs": pick(self.epochs),
                "batch_size": pick(self.batch_size), "lr": pick(self.lr),
                "weight_decay": self.weight_decay, "warmup_epochs": self.warmup_epochs,
                "num_workers": self.num_workers, "cache_images": self.cache_images,
                "eval_batches": pick(self.eval_batches),
                "sensitivity_sparsities": list(self.sensitivity_sparsities),
                "sensitivity_tolerance": self.sensitivity_tolerance, "target_kept": pick(self.target_kept),
                "budget_allocation": pick(self.budget_allocation),
                "prune_rounds": self.prune_rounds, "retrain_epochs": pick(self.retrain_epochs),
                "dense_control": self.dense_control,
                "retrain_lr_factor": self.retrain_lr_factor, "extra_rounds": pick(self.extra_rounds),
                "remove_dead_units": self.remove_dead_units,
                "extra_keep": pick(self.extra_keep), "stop_tolerance": pick(self.stop_tolerance),
                "stop_loss_tolerance": pick(self.stop_loss_tolerance), "stop_z": pick(self.stop_z),
                "conv_bits": self.conv_bits, "fc_bits": self.fc_bits, "depthwise_bits": self.depthwise_bits,
                "bit_allocation": pick(self.bit_allocation),
                "compact_storage": self.compact_storage,
                "bits_tolerance": self.bits_tolerance,
                "bits_loss_tolerance": self.bits_loss_tolerance, "min_bits": self.min_bits,
                "quant_epochs": pick(self.quant_epochs),
                "quant_lr_factor": self.quant_lr_factor, "distill_weight": self.distill_weight,
                "distill_temperature": self.distill_temperature, "world_size": self.world_size,
                "precision": self.precision, "threads": self.threads, "channels_last": self.channels_last}

    def to_dict(self) -> dict:
        return asdict(self)
