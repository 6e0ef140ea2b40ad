"""Online monitors: every few epochs, how good is the backbone so far, against the compute spent?

The kNN monitor runs the same kNN as ``python -m eval.knn`` on held-out data. Where there are no labels, the
label-free monitor reads RankMe, alignment and uniformity (``ssl_emp.evaluation.label_free``) on a fixed sample of
the training images; beside the kNN it reads them too. Both run the backbone in eval mode and touch neither the
training's RNG nor BatchNorm statistics, so a monitored run trains exactly as an unmonitored one.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ssl_emp.data import ImageBank
from ssl_emp.data.augment import Normalize
from ssl_emp.evaluation import extract_features, knn_accuracy
from ssl_emp.evaluation.label_free import alignment, rankme, uniformity


def _due(every: int, epoch: int, last: bool) -> bool:
    return every > 0 and (epoch % every == 0 or last)


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
        return _due(self.every, epoch, last)

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


class LabelFreeMonitor:
    """RankMe and uniformity of the backbone's features on ``sample`` (a fixed sample of the training images, no
    labels read), and the alignment of two augmented views of each, every ``every`` epochs and at the last."""

    def __init__(self, sample: ImageBank, views: nn.Module, normalize: Normalize, device: torch.device, *, every: int):
        self.sample, self.views, self.device, self.every = sample.to(device), views, device, every
        self.normalize = normalize.to(device)

    def due(self, epoch: int, last: bool) -> bool:
        return _due(self.every, epoch, last)

    @torch.no_grad()
    def __call__(self, backbone: nn.Module) -> dict:
        started = time.perf_counter()
        was_training = backbone.training
        clean, _ = extract_features(backbone, self.normalize, self.sample, self.device, desc="monitor")
        images = self.sample.images.float().div(255.0)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the training's own augmentation draws stay as they were
            view0, view1 = self.views(images)
        backbone.eval()
        features0, features1 = backbone(view0).float(), backbone(view1).float()
        backbone.train(was_training)
        return {
            "monitor/rankme": rankme(clean),
            "monitor/alignment": alignment(features0, features1),
            "monitor/uniformity": uniformity(clean),
            "monitor/label_free_seconds": time.perf_counter() - started,
        }


class Monitors:
    """Several monitors as one: due when any is, each read when it is due."""

    def __init__(self, monitors: list):
        self.monitors = monitors
        self._epoch, self._last = 0, False

    def due(self, epoch: int, last: bool) -> bool:
        self._epoch, self._last = epoch, last
        return any(m.due(epoch, last) for m in self.monitors)

    def __call__(self, backbone: nn.Module) -> dict:
        out: dict = {}
        for monitor in self.monitors:
            if monitor.due(self._epoch, self._last):
                out.update(monitor(backbone))
        return out
