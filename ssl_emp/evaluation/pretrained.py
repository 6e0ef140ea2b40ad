"""A pretrained backbone and its frozen features on labelled data: what every evaluation command starts from.

The checkpoint's config is read as the plain tree it was saved as (``config["model"]["backbone"]``...), so
this module, like the rest of ``ssl_emp.evaluation``, needs no config package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ssl_emp.checkpoint import CheckpointError
from ssl_emp.data.augment import Normalize
from ssl_emp.evaluation.features import extract_features, load_eval_banks
from ssl_emp.export import read_backbone


@dataclass
class PretrainedBackbone:
    backbone: nn.Module
    config: dict  # the pretraining run's settings, as saved in its checkpoint
    normalize: Normalize
    data_info: dict
    epoch: int
    feature_dim: int


def load_pretrained(
    checkpoint: str, device: torch.device, random_init: bool = False, seed: int = 0
) -> PretrainedBackbone:
    """The backbone of a run directory, a pretraining checkpoint or an exported backbone (``ssl_emp.export``);
    with ``random_init``, a fresh one of the same architecture."""
    saved = read_backbone(checkpoint, map_location="cpu")
    if saved.config is None or saved.data is None:
        raise CheckpointError(
            f"'{checkpoint}' was exported without its run's settings, which evaluation needs to "
            "find and prepare the data; export the run again with this version."
        )
    torch.manual_seed(seed)
    backbone, feature_dim = saved.build()
    if not random_init:
        backbone.load_state_dict(saved.state)
    info = saved.data
    return PretrainedBackbone(
        backbone.to(device).eval(),
        saved.config,
        Normalize(info["mean"], info["std"]).to(device),
        info,
        saved.epoch,
        feature_dim,
    )


@dataclass
class FrozenFeatures:
    """A backbone's frozen features on the labelled train split and the held-out test split."""

    pretrained: PretrainedBackbone
    dataset: str  # what the features are of: the pretraining dataset, or another (transfer)
    adapted: dict  # how that dataset was fitted to the backbone (channels, image size); empty when not
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def frozen_features(
    checkpoint: str,
    device: torch.device,
    *,
    random_init: bool = False,
    seed: int = 0,
    data_root: Optional[str] = None,
    train_subset: Optional[int] = None,
    dataset: Optional[str] = None,
    batch_size: int = 512,
    progress: str = "off",
) -> FrozenFeatures:
    """Load a checkpoint's backbone (or a random one like it) and extract train and test features once, on its
    pretraining dataset or on ``dataset``, ``batch_size`` images a forward (``progress``: a
    :class:`~ssl_emp.progress.Progress` mode)."""
    pretrained = load_pretrained(checkpoint, device, random_init=random_init, seed=seed)
    train_bank, test_bank, adapted = load_eval_banks(
        pretrained.config["data"], pretrained.data_info, data_root, train_subset, dataset=dataset
    )
    train_x, train_y = extract_features(
        pretrained.backbone,
        pretrained.normalize,
        train_bank,
        device,
        batch_size,
        desc="train features",
        progress=progress,
    )
    test_x, test_y = extract_features(
        pretrained.backbone,
        pretrained.normalize,
        test_bank,
        device,
        batch_size,
        desc="test features",
        progress=progress,
    )
    return FrozenFeatures(
        pretrained,
        dataset or pretrained.config["data"]["name"],
        adapted,
        train_bank.num_classes,
        train_x,
        train_y,
        test_x,
        test_y,
    )
