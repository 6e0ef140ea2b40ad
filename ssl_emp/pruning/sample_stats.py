"""What the pruning engine reads from one training step: per-sample statistics of the batch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` per row, in float32, without gradients (-inf logits, such as a masked
    similarity matrix's diagonal, count as probability 0)."""
    log_p = logits.detach().float().log_softmax(dim=1)
    return -(log_p.exp() * log_p.nan_to_num(neginf=0.0)).sum(dim=1)


@dataclass
class SampleStats:
    """Per-sample results of one step over B samples. Only ``loss`` is required; a scorer that needs more
    (EMP's ``drift`` the embedding, ``entropy`` the entropy, ...) says so when it is missing.

    ``loss`` may carry the graph (the engine detaches what it keeps). Everything stays on the device.
    """

    loss: torch.Tensor  # [B] the per-sample training loss
    agreement: Optional[torch.Tensor] = None  # [B] how well the sample's two views (or its label) agree
    entropy: Optional[torch.Tensor] = None  # [B] entropy of the sample's softmax rows
    positive_prob: Optional[torch.Tensor] = None  # [B] probability given to the sample's positive (or label)
    embedding: Optional[torch.Tensor] = None  # [B, d] where the sample sits (EMP ``drift``)
    # [B] the loss of a uniform guess, log(number of candidates): EMP compares losses over time above it, so
    # that a change of batch size (NT-Xent grows with the log of the negatives) does not read as forgetting
    chance_loss: Optional[torch.Tensor] = None

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor) -> "SampleStats":
        """Supervised training: cross-entropy as the loss and the prediction entropy, so EMP with
        ``memory="entropy", normalize="none"`` is the paper's supervised ``CE + beta * H``."""
        loss = F.cross_entropy(logits.float(), labels, reduction="none")
        with torch.no_grad():
            probs = logits.detach().float().softmax(dim=1)
            true_prob = probs.gather(1, labels[:, None]).squeeze(1)
        chance = torch.full_like(loss, math.log(logits.shape[1]))
        return cls(loss, true_prob, prediction_entropy(logits), true_prob, F.normalize(probs, dim=1), chance)

    def training_loss(self, weights: Optional[torch.Tensor] = None, count: Optional[float] = None) -> torch.Tensor:
        """``sum(w_i * loss_i) / count``, the loss to back-propagate (count defaults to the batch size: the
        weighted mean). Selectors' weights keep it unbiased (InfoBatch's 1/(1-r)); under DDP each rank passes
        ``count = global batch / world size``, so that DDP's gradient average is the global batch mean."""
        loss = self.loss if weights is None else weights.to(self.loss.dtype) * self.loss
        return loss.mean() if count is None else loss.sum() / count

    def to_block(self) -> torch.Tensor:
        """Detached float32 ``[B, 5 + d]``: loss, agreement, entropy, positive_prob, chance_loss (NaN where
        absent), then the embedding: one tensor, so a gather across processes is one collective."""
        missing = torch.full_like(self.loss, float("nan"), dtype=torch.float32)
        columns = [
            (t if t is not None else missing).detach().float()[:, None]
            for t in (self.loss, self.agreement, self.entropy, self.positive_prob, self.chance_loss)
        ]
        if self.embedding is not None:
            columns.append(self.embedding.detach().float())
        return torch.cat(columns, dim=1)

    def from_block(self, block: torch.Tensor) -> "SampleStats":
        """Statistics unpacked from ``block`` (``to_block``'s layout, any number of rows), with the fields this
        one has."""
        fields = (self.loss, self.agreement, self.entropy, self.positive_prob)
        columns = block[:, :5].unbind(dim=1)
        return SampleStats(
            *(None if f is None else c for f, c in zip(fields, columns)),
            embedding=block[:, 5:] if self.embedding is not None else None,
            chance_loss=None if self.chance_loss is None else columns[4],
        )
