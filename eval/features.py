"""Frozen-backbone feature extraction shared by every evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from tqdm import tqdm

from ssl_emp.config import PretrainConfig
from ssl_emp.data import ImageBank, load_bank
from ssl_emp.data.augment import Normalize
from ssl_emp.engine.checkpoint import backbone_state_dict, load_checkpoint
from ssl_emp.models import build_backbone


@dataclass
class PretrainedBackbone:
    backbone: nn.Module
    config: PretrainConfig
    normalize: Normalize
    data_info: dict
    epoch: int
    feature_dim: int


def load_pretrained(checkpoint: str, device: torch.device, random_init: bool = False, seed: int = 0) -> PretrainedBackbone:
    """The backbone of a pretraining checkpoint (or, with ``random_init``, a fresh one of the same architecture)."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    cfg = PretrainConfig.model_validate(ckpt["config"])
    info = ckpt["data"]
    torch.manual_seed(seed)
    backbone, feature_dim = build_backbone(cfg.model.backbone, info["channels"], cfg.model.cifar_stem, cfg.model.width)
    if not random_init:
        backbone.load_state_dict(backbone_state_dict(ckpt["model"]))
    return PretrainedBackbone(backbone.to(device).eval(), cfg, Normalize(info["mean"], info["std"]).to(device),
                              info, ckpt["epoch"], feature_dim)


@torch.no_grad()
def extract_features(backbone: nn.Module, normalize: nn.Module, bank: ImageBank, device: torch.device,
                     batch_size: int = 512, desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [N, D] float32, labels [N])`` on ``device``, backbone in eval mode."""
    backbone.eval()
    cuda = device.type == "cuda"
    chunks = []
    for start in tqdm(range(0, len(bank), batch_size), desc=desc, unit="batch", leave=False, disable=None):
        images = bank.batch(torch.arange(start, min(start + batch_size, len(bank)), device=bank.device)).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False):
            chunks.append(backbone(normalize(images)).float())
    return torch.cat(chunks), bank.labels.to(device)


def load_eval_banks(cfg: PretrainConfig, data_info: dict, root: Optional[str] = None,
                    train_subset: Optional[int] = None,
                    test_subset: Optional[int] = None) -> tuple[ImageBank, ImageBank]:
    """The labelled train and test splits of the dataset a backbone was pretrained on."""
    root = root or cfg.data.root
    size = data_info["image_size"] if cfg.data.image_size is not None else None
    train = load_bank(cfg.data.name, root, "train", size, train_subset)
    test = load_bank(cfg.data.name, root, "test", size, test_subset)
    labelled = train.labels >= 0  # STL-10's unlabeled images cannot train a classifier
    if not bool(labelled.all()):
        train = train.subset(labelled.nonzero().squeeze(1))
    return train, test


@dataclass
class FrozenFeatures:
    """A backbone's frozen features on the labelled train split and the held-out test split."""

    pretrained: PretrainedBackbone
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def frozen_features(checkpoint: str, device: torch.device, *, random_init: bool = False, seed: int = 0,
                    data_root: Optional[str] = None, train_subset: Optional[int] = None) -> FrozenFeatures:
    """Load a checkpoint's backbone (or a random one like it) and extract train and test features once."""
    pretrained = load_pretrained(checkpoint, device, random_init=random_init, seed=seed)
    train_bank, test_bank = load_eval_banks(pretrained.config, pretrained.data_info, data_root, train_subset)
    train_x, train_y = extract_features(pretrained.backbone, pretrained.normalize, train_bank, device,
                                        desc="train features")
    test_x, test_y = extract_features(pretrained.backbone, pretrained.normalize, test_bank, device,
                                      desc="test features")
    return FrozenFeatures(pretrained, train_x, train_y, test_x, test_y)
