"""Online kNN monitor: every few epochs, how good is the backbone so far, against the compute spent?

It runs the same kNN as ``python -m eval.knn`` on held-out data, with the backbone in eval mode, and
touches neither the RNG nor BatchNorm statistics, so a monitored run trains exactly as an unmonitored one.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ssl_emp.data import ImageBank
from ssl_emp.data.augment import Normalize
from ssl_emp.evaluation import extract_features, knn_accuracy


class KNNMonitor:
    """kNN top-1 of the backbone's features, ``test_bank`` classified against ``train_bank``, every ``every``
    epochs and at the last one."""

    def __init__(
        self,
        train_bank: ImageBank,
        test_bank: ImageBank,
        normalize: Normalize,
        device: torch.device,
        *,
        every: int,
        k: int = 200,
        temperature: float = 0.1,
    ):
        self.device, self.every, self.k, self.temperature = device, every, k, temperature
        self.normalize = normalize.to(device)
        self.train_bank, self.test_bank = train_bank.to(device), test_bank.to(device)

    def due(self, epoch: int, last: bool) -> bool:
        """Whether to check after ``epoch`` (``last``: the run's final epoch)."""
        return self.every > 0 and (epoch % self.every == 0 or last)

    def __call__(self, backbone: nn.Module) -> dict:
        started = time.perf_counter()
        was_training = backbone.training
        train_x, train_y = extract_features(backbone, self.normalize, self.train_bank, self.device, desc="monitor")
        test_x, test_y = extract_features(backbone, self.normalize, self.test_bank, self.device, desc="monitor")
        backbone.train(was_training)
        accuracy = knn_accuracy(train_x, train_y, test_x, test_y, self.train_bank.num_classes, self.k, self.temperature)
        return {
            **{f"monitor/knn_{k}": v for k, v in accuracy.items()},
            "monitor/seconds": time.perf_counter() - started,
        }
