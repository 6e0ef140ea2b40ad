"""``emp``: score_i = z(loss_i) + beta * z(memory_i) (Enhance Memory Pruning, arXiv 2408.16031).

The paper's supervised memory term is the prediction entropy, ``CE(x, y) + beta * H(softmax(f(x)))``
(:func:`supervised_emp_score`). For contrastive SSL it leaves the memory term open. SimCLR's per-sample
NT-Xent is ``logsumexp_i - agreement_i / tau``, so any function of the current agreement, of p(positive) or
of the current loss ranks almost like the loss, and EMP would be InfoBatch under another name. The forms
that carry something else say how well the model still remembers a sample *since its last visit*:

- ``drift``: ``1 - cos(e_now, e_last)``, how far the sample's embedding (the normalised mean of its two
  view projections) moved since it was last trained on; an [N, d] table of embeddings lives on the device.
- ``loss_change``: ``loss_now - loss_last``, positive when the sample was forgotten in between.
- ``recency``: epochs since the last visit (the paper's low-frequency learning, seen directly).

and, for the ablation that shows their redundancy with the loss, the forms computed from the current
forward pass alone: ``agreement`` ``cos(z1, z2)``, ``disagreement`` ``1 - cos(z1, z2)``, ``entropy`` (of the
sample's contrastive softmax rows) and ``forgetting`` (``1 - p(positive)``).

With ``normalize=zscore`` (the default) both terms are normalised by a running z-score (an exponential moving average of each term's batch mean
and mean square), so ``beta`` means the same on every dataset and at every point of training, and a score
computed epochs ago is compared with a fresh one relative to the distribution of its own time. A first
visit has no "since": its memory term is 0 (the running mean). ``normalize=none`` adds the raw terms,
which with ``memory=entropy`` on a classifier's outputs is the paper's supervised form exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ssl_emp.pruning.sample_stats import SampleStats, prediction_entropy
from ssl_emp.pruning.scorers.base import Scorer

STATS_MOMENTUM = 0.9  # per step: the running statistics follow the loss as training lowers it


@dataclass
class PreviousVisit:
    """What the table knew about each sample of the batch before this visit (NaN where there was none)."""

    loss: torch.Tensor  # [B]
    epochs_since: torch.Tensor  # [B]
    embedding: Optional[torch.Tensor]  # [B, d] (zeros where there was no visit), only for ``drift``


def _drift(out: SampleStats, prev: PreviousVisit) -> torch.Tensor:
    if out.embedding is None:
        raise ValueError("EMP memory form 'drift' needs per-sample embeddings (SampleStats.embedding), and this "
                         "step gave none.")
    cos = F.cosine_similarity(out.embedding.float(), prev.embedding, dim=1)
    return torch.where(prev.loss.isnan(), torch.full_like(cos, float("nan")), 1.0 - cos)


def _needs(name: str, value: Optional[torch.Tensor], form: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"EMP memory form '{form}' needs per-sample {name}, and this step gave none.")
    return value


MEMORY_FORMS: dict[str, Callable[[SampleStats, PreviousVisit], torch.Tensor]] = {
    "drift": _drift,
    "loss_change": lambda out, prev: out.loss.detach().float() - prev.loss,
    "recency": lambda out, prev: prev.epochs_since,
    "agreement": lambda out, prev: _needs("view agreements", out.agreement, "agreement"),
    "disagreement": lambda out, prev: 1.0 - _needs("view agreements", out.agreement, "disagreement"),
    "entropy": lambda out, prev: _needs("softmax entropies", out.entropy, "entropy"),
    "forgetting": lambda out, prev: 1.0 - _needs("positive probabilities", out.positive_prob, "forgetting"),
}


def supervised_emp_score(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """The paper's supervised form, per sample: ``CE(x, y) + beta * H(softmax(f(x)))``."""
    logits = logits.detach().float()
    return F.cross_entropy(logits, labels, reduction="none") + beta * prediction_entropy(logits)


class RunningZScore:
    """z = (x - mean) / std with an EMA of the batch mean and mean square; NaNs are left out and give z = 0.

    Updated with tensor ops only (no host read), so it runs inside every training step.
    """

    def __init__(self, momentum: float = STATS_MOMENTUM):
        self.momentum = momentum
        self.state: Optional[torch.Tensor] = None  # [3]: updates so far, mean, mean square

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.state is None:
            self.state = torch.zeros(3, device=x.device)
        valid = ~x.isnan()
        n = valid.sum()
        filled = torch.where(valid, x, torch.zeros_like(x))
        batch_mean = filled.sum() / n.clamp_min(1)
        batch_sq = filled.pow(2).sum() / n.clamp_min(1)
        step = torch.where(self.state[0] == 0, 1.0, 1.0 - self.momentum) * (n > 0)
        self.state = torch.stack([self.state[0] + (n > 0).float(),
                                  self.state[1] + step * (batch_mean - self.state[1]),
                                  self.state[2] + step * (batch_sq - self.state[2])])
        std = (self.state[2] - self.state[1].pow(2)).clamp_min(0).sqrt().clamp_min(1e-6)
        return torch.where(valid, (x - self.state[1]) / std, torch.zeros_like(x))


class EMPScorer(Scorer):
    reads = ("beta", "memory", "normalize")

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.form = MEMORY_FORMS[cfg.memory]
        self.loss_z = RunningZScore()
        self.memory_z = RunningZScore()
        self.embeddings: Optional[torch.Tensor] = None  # [N, d], ``drift`` only
        self.last_memory: Optional[torch.Tensor] = None  # [N] raw memory term at each sample's last visit

    def memory(self, output: SampleStats, table, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """The raw memory term of the batch (NaN where it is undefined: a first visit)."""
        seen = table.visits[indices] > 0
        nan = torch.full(indices.shape, float("nan"), device=indices.device)
        prev_loss = torch.where(seen, table.last_loss(indices), nan)
        prev = PreviousVisit(prev_loss, torch.where(seen, (epoch - table.last_epoch[indices]).float(), nan), None)
        if self.cfg.memory == "drift" and output.embedding is not None:
            if self.embeddings is None:
                self.embeddings = torch.zeros(table.num_samples, output.embedding.shape[1], device=indices.device)
            prev.embedding = self.embeddings[indices]
            self.embeddings[indices] = F.normalize(output.embedding.detach().float(), dim=1)
        return self.form(output, prev).detach().float()

    def __call__(self, output, table, indices, epoch=0):
        loss = output.loss.detach().float()
        memory = self.memory(output, table, indices, epoch)
        if self.last_memory is None:
            self.last_memory = torch.full((table.num_samples,), float("nan"), device=indices.device)
        self.last_memory[indices] = memory
        if self.cfg.normalize == "none":
            return loss + self.cfg.beta * memory.nan_to_num(0.0)
        return self.loss_z(loss) + self.cfg.beta * self.memory_z(memory)

    def state_dict(self) -> dict:
        state = {"loss_z": self.loss_z.state, "memory_z": self.memory_z.state, "embeddings": self.embeddings,
                 "last_memory": self.last_memory}
        return {k: v for k, v in state.items() if v is not None}

    def load_state_dict(self, state: dict) -> None:
        self.loss_z.state = state.get("loss_z")
        self.memory_z.state = state.get("memory_z")
        self.embeddings = state.get("embeddings")
        self.last_memory = state.get("last_memory")
