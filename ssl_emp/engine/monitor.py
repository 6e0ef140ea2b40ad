"""Online kNN monitor: every few epochs, how good is the backbone so far, against the compute spent?

It runs the same kNN as ``python -m eval.knn`` on held-out data, with the backbone in eval mode, and
touches neither the RNG nor BatchNorm statistics, so a monitored run trains exactly as an unmonitored one.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ssl_emp.config import PretrainConfig
from ssl_emp.data.augment import Normalize
from ssl_emp.evaluation import extract_features, knn_accuracy, load_eval_banks


class KNNMonitor:
    def __init__(self, cfg: PretrainConfig, image_size: int, mean: list[float], std: list[float],
                 device: torch.device):
        self.cfg = cfg.monitor
        self.device = device
        self.normalize = Normalize(mean, std).to(device)
        self.train_bank, self.test_bank, _ = load_eval_banks(
            cfg, {"image_size": image_size}, train_subset=self.cfg.train_subset, test_subset=self.cfg.test_subset)
        self.train_bank, self.test_bank = self.train_bank.to(device), self.test_bank.to(device)

    def due(self, epoch: int, epochs: int) -> bool:
        return self.cfg.every > 0 and (epoch % self.cfg.every == 0 or epoch == epochs)

    def __call__(self, backbone: nn.Module) -> dict:
        started = time.perf_counter()
        was_training = backbone.training
        train_x, train_y = extract_features(backbone, self.normalize, self.train_bank, self.device, desc="monitor")
        test_x, test_y = extract_features(backbone, self.normalize, self.test_bank, self.device, desc="monitor")
        backbone.train(was_training)
        accuracy = knn_accuracy(train_x, train_y, test_x, test_y, self.train_bank.num_classes, self.cfg.k, self.cfg.temperature)
        return {**{f"monitor/knn_{k}": v for k, v in accuracy.items()},
                "monitor/seconds": time.perf_counter() - started}
