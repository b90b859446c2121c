"""Knowledge distillation: the dense network teaches its own pruned and quantized copies
(``training.fit(..., teacher=, distill_weight=)``).

Deep Compression retrains the survivors on the labels alone. A compact pretrained network such as
EfficientNet-Lite0 has little to spare: at commit 9b1176f its three one-epoch pruning rounds ended
0.46 / 1.20 / 2.24 validation points under the fine-tuned baseline. The baseline itself is a better
teacher than the labels: its softened outputs say which wrong classes are close (a seal that looks
like an otter), and they are the function the compressed copy is meant to keep.

The loss (Hinton, Vinyals, Dean, *Distilling the Knowledge in a Neural Network*, 2015) mixes the
usual cross-entropy with the KL divergence from the teacher's to the student's softened outputs::

    (1 - weight) * CE(student, labels) + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))

``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T`` grows. ``weight=0``
is plain training, to the bit. The teacher runs in eval mode without gradients on the same augmented
batch as the student, so a step costs one more forward pass of the teacher.

Measured on that Lite0 (``transfer`` profile, test split of 1,743 images): with two-epoch rounds and
distillation (weight 0.7, T 4; commit 7a4e5d3) the rounds ended at 83.19 / 81.64 / 81.47 %
validation and the pruned network at 82.67 % test (9b1176f: 81.93 %). Two-epoch rounds without it
(commit ac520b4) ended rounds 1 and 2 at 82.96 / 82.04 %: how much of the gain is distillation's is
not yet separated.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def check_distillation(weight, temperature) -> None:
    """Refuse a mixing weight outside [0, 1] or a temperature that is not a positive number."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"distillation weight must be a number in [0, 1] (0 = labels only), got {weight!r}.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 \
            or temperature == float("inf"):
        raise ValueError(f"distillation temperature must be a finite number > 0 (e.g. 4), got {temperature!r}.")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      weight: float, temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """The mixed loss above, averaged over the batch; ``teacher_logits`` carry no gradient."""
    check_distillation(weight, temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} and "
                         f"{tuple(teacher_logits.shape)}; the teacher must classify the same classes.")
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if weight == 0:
        return hard
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    soft = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return (1 - weight) * hard + weight * temperature ** 2 * soft


class DistillationCriterion(nn.Module):
    """A training criterion ``(logits, targets, images) -> loss`` that asks ``teacher`` about ``images``.

    The teacher is a frozen copy (eval mode, no gradients), so training the student, or the caller
    changing the original afterwards, leaves it alone. ``training.train_one_epoch`` passes the images
    to any criterion whose ``needs_images`` is true.
    """

    needs_images = True

    def __init__(self, teacher: nn.Module, weight: float, temperature: float, label_smoothing: float = 0.0):
        super().__init__()
        check_distillation(weight, temperature)
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.weight, self.temperature, self.label_smoothing = float(weight), float(temperature), label_smoothing

    def train(self, mode: bool = True):  # the teacher stays in eval mode (BatchNorm statistics frozen)
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        return distillation_loss(logits, teacher_logits, targets, self.weight, self.temperature,
                                 self.label_smoothing)
