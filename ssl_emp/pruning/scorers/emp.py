"""``emp``: score_i = z(loss_i) + beta * z(memory_i) (Enhance Memory Pruning, arXiv 2408.16031).

The paper's supervised memory term is the prediction entropy, ``CE(x, y) + beta * H(softmax(f(x)))``
(:func:`supervised_emp_score`). For contrastive SSL it leaves the memory term open. SimCLR's per-sample
NT-Xent is ``logsumexp_i - agreement_i / tau``, so any function of the current agreement, of p(positive) or
of the current loss ranks almost like the loss, and EMP would be InfoBatch under another name. The forms
that carry something else say how much the model may have forgotten a sample *since its last visit*, and
they are read **when the next epoch is selected, for every sample**: a sample left out keeps waiting, and
what it may have forgotten keeps growing, so the pruner cannot starve it.

Time forms (measured at each visit as a rate per epoch, read at selection against the epochs since):

- ``loss_change``: the rise of the sample's loss per epoch between its last two visits, times the epochs
  since its last visit (its expected forgetting; a loss still falling counts as no forgetting).
- ``drift``: ``1 - cos(e_now, e_last)`` per epoch between visits (how fast the sample's embedding moves),
  times the epochs since; an [N, d] table of embeddings lives on the device.
- ``recency``: the epochs since the last visit (the paper's low-frequency learning, seen directly).
- ``spaced``: ours, not the paper's: spaced repetition. The chance the sample is forgotten,
  ``1 - exp(-since / S_i)``, where the stability ``S_i`` doubles at each visit whose loss did not rise since
  the last one and falls back to 1 epoch when it did.

and, for the ablation that shows their redundancy with the loss, forms read from the last visit's forward
pass alone: ``agreement`` ``cos(z1, z2)``, ``disagreement`` ``1 - cos(z1, z2)``, ``entropy`` (of the sample's
contrastive softmax rows) and ``forgetting`` (``1 - p(positive)``). ``agreement`` has the sign that cancels
the loss; ``disagreement`` the sign that adds to it.

The loss compared over time is the loss above chance, ``loss - log(candidates)`` (``SampleStats.chance_loss``):
NT-Xent grows with the log of the number of negatives, so a change of batch size would otherwise read as
forgetting. With ``normalize=zscore`` (the default) both terms are z-scored over the whole table's current
values (every sample seen so far, not the selection-biased batch just trained), so ``beta`` means the same on
every dataset. A sample whose term is still unmeasured (one visit, for the rate forms) takes the population's
mean rate. ``normalize=none`` adds the raw terms, which with ``memory=entropy`` on a classifier's outputs is
the paper's supervised form exactly.

**No starvation, by construction**: a sample that has waited ``ceil(1.5 / keep)`` epochs (``keep``: the
fraction a pruned epoch keeps) is put first at the next selection, after unseen samples, the longest wait
first. Within that bound the scores decide. The warm-up visits every sample at once, so the first such
revisits come as one burst, which takes ``1 / keep`` epochs to clear: no wait exceeds about ``2.5 / keep``
epochs (3 / (1 - rate) at every rate, tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ssl_emp.pruning.sample_stats import SampleStats, prediction_entropy
from ssl_emp.pruning.scorers.base import Scorer
from ssl_emp.pruning.settings import MEMORY_FORM_NAMES
from ssl_emp.pruning.table import UNSEEN_SCORE


@dataclass
class Visit:
    """One step's samples as the scorer sees them: now, and at their previous visit (NaN where there was none)."""

    stats: SampleStats
    above_chance: torch.Tensor  # [B] loss - log(candidates)
    previous_above_chance: torch.Tensor  # [B]
    epochs_between: torch.Tensor  # [B] since the previous visit
    previous_measure: torch.Tensor  # [B] the form's measurement at the previous visit
    embedding_cos: Optional[torch.Tensor]  # [B] cos(embedding now, at the previous visit), ``drift`` only


_DESCRIBED = {
    "agreement": "view agreements",
    "entropy": "softmax entropies",
    "positive_prob": "positive probabilities",
    "embedding": "embeddings",
}


def _needs(stats: SampleStats, field: str, form: str) -> torch.Tensor:
    """``stats.<field>``, detached, or a one-line error that says what to pass."""
    value = getattr(stats, field)
    if value is None:
        raise ValueError(
            f"EMP memory form '{form}' needs per-sample {_DESCRIBED[field]}, and this step gave none: "
            f"pass them in a SampleStats (pruner.step(indices, SampleStats(loss, {field}=...))), or "
            "choose memory='spaced' (the default), which reads the loss alone."
        )
    return value.detach().float()


def _stability(visit: Visit) -> torch.Tensor:
    remembered = visit.above_chance <= visit.previous_above_chance
    doubled = torch.where(remembered, 2.0 * visit.previous_measure, torch.ones_like(visit.above_chance))
    return torch.where(visit.previous_measure.isnan(), torch.ones_like(doubled), doubled)


@dataclass(frozen=True)
class MemoryForm:
    """How a memory term is measured at a visit (``measure``, NaN where undefined) and read at selection
    (``read(measured, epochs_since)``)."""

    measure: Callable[[Visit], torch.Tensor]
    read: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lambda measured, since: measured
    needs_embedding: bool = False


def _rate_times_since(measured: torch.Tensor, since: torch.Tensor) -> torch.Tensor:
    return measured.clamp_min(0.0) * since


MEMORY_FORMS: dict[str, MemoryForm] = {
    "loss_change": MemoryForm(
        lambda v: (v.above_chance - v.previous_above_chance) / v.epochs_between, _rate_times_since
    ),
    "drift": MemoryForm(lambda v: (1.0 - v.embedding_cos) / v.epochs_between, _rate_times_since, needs_embedding=True),
    "recency": MemoryForm(lambda v: torch.ones_like(v.above_chance), _rate_times_since),
    "spaced": MemoryForm(_stability, lambda stability, since: 1.0 - torch.exp(-since / stability)),
    "agreement": MemoryForm(lambda v: _needs(v.stats, "agreement", "agreement")),
    "disagreement": MemoryForm(lambda v: 1.0 - _needs(v.stats, "agreement", "disagreement")),
    "entropy": MemoryForm(lambda v: _needs(v.stats, "entropy", "entropy")),
    "forgetting": MemoryForm(lambda v: 1.0 - _needs(v.stats, "positive_prob", "forgetting")),
}
if tuple(MEMORY_FORMS) != MEMORY_FORM_NAMES:
    raise ImportError(f"MEMORY_FORMS {tuple(MEMORY_FORMS)} and settings.MEMORY_FORM_NAMES {MEMORY_FORM_NAMES} disagree")


def supervised_emp_score(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """The paper's supervised form, per sample: ``CE(x, y) + beta * H(softmax(f(x)))``."""
    logits = logits.detach().float()
    return F.cross_entropy(logits, labels, reduction="none") + beta * prediction_entropy(logits)


def longest_wait(keep: float) -> int:
    """The epochs a sample may wait before it is put first: ``ceil(1.5 / keep)``."""
    return math.ceil(1.5 / max(keep, 1e-9) - 1e-9)


def _zscore(x: torch.Tensor, population: torch.Tensor) -> torch.Tensor:
    values = x[population]
    if values.numel() < 2:
        return torch.zeros_like(x)
    return (x - values.mean()) / values.std().clamp_min(1e-6)


class EMPScorer(Scorer):
    reads = ("beta", "memory", "normalize")

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.form = MEMORY_FORMS[cfg.memory]
        # Per sample, on the training device: the loss above chance at the last visit, and the form's measure.
        self.above_chance: Optional[torch.Tensor] = None  # [N]
        self.measured: Optional[torch.Tensor] = None  # [N]
        self.embeddings: Optional[torch.Tensor] = None  # [N, d], ``drift`` only
        self.last_memory: Optional[torch.Tensor] = None  # [N] the memory term at the latest selection

    def _state_for(self, table, device) -> None:
        if self.above_chance is None:
            self.above_chance = torch.full((table.num_samples,), float("nan"), device=device)
            self.measured = torch.full((table.num_samples,), float("nan"), device=device)

    def __call__(self, output: SampleStats, table, indices: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """Record this visit's measurements (before the table records the visit); returns the score the table
        holds until the next selection recomputes every sample's."""
        self._state_for(table, indices.device)
        loss = output.loss.detach().float()
        above = loss - (output.chance_loss.float() if output.chance_loss is not None else 0.0)
        seen = table.visits[indices] > 0
        nan = torch.full_like(loss, float("nan"))
        cos = None
        if self.form.needs_embedding:
            embedding = F.normalize(_needs(output, "embedding", self.cfg.memory), dim=1)
            if self.embeddings is None:
                self.embeddings = torch.zeros(table.num_samples, embedding.shape[1], device=indices.device)
            cos = torch.where(seen, (embedding * self.embeddings[indices]).sum(dim=1), nan)
            self.embeddings[indices] = embedding
        visit = Visit(
            output,
            above,
            torch.where(seen, self.above_chance[indices], nan),
            torch.where(seen, (epoch - table.last_epoch[indices]).float().clamp_min(1.0), nan),
            self.measured[indices],
            cos,
        )
        self.measured[indices] = self.form.measure(visit).float()
        self.above_chance[indices] = above
        if self.cfg.normalize == "none":
            return loss + self.cfg.beta * self.measured[indices].nan_to_num(0.0)
        return above

    def memory_now(self, table, epoch: int) -> torch.Tensor:
        """Every sample's memory term were the next epoch selected now (NaN for samples never seen)."""
        seen = table.visits > 0
        measured = self.measured.to(table.scores.device)
        known = seen & ~measured.isnan()
        fill = measured[known].mean() if bool(known.any()) else torch.tensor(0.0)
        since = (epoch - table.last_epoch).float()
        memory = self.form.read(torch.where(known, measured, fill), since)
        return torch.where(seen, memory, torch.full_like(memory, float("nan")))

    def selection_scores(self, table, epoch: int, keep: Optional[float] = None) -> torch.Tensor:
        if self.above_chance is None:  # nothing seen yet
            return table.scores
        seen = table.visits > 0
        memory = self.memory_now(table, epoch)
        self.last_memory = memory.to(self.above_chance.device)
        if self.cfg.normalize == "none":
            loss = table.last_loss(torch.arange(table.num_samples, device=table.scores.device))
            scores = loss + self.cfg.beta * memory
        else:
            above = self.above_chance.to(table.scores.device)
            scores = _zscore(above, seen) + self.cfg.beta * _zscore(memory, seen)
        scores = torch.where(seen, scores, torch.full_like(scores, UNSEEN_SCORE))
        if keep is not None and keep < 1.0:
            since = (epoch - table.last_epoch).float()
            overdue = seen & (since >= longest_wait(keep))
            top = scores[seen & ~overdue].max() if bool((seen & ~overdue).any()) else torch.tensor(0.0)
            scores = torch.where(overdue, top + since, scores)  # above every other seen sample, longest first
        return scores

    def state_dict(self) -> dict:
        state = {
            "above_chance": self.above_chance,
            "measured": self.measured,
            "embeddings": self.embeddings,
            "last_memory": self.last_memory,
        }
        return {k: v for k, v in state.items() if v is not None}

    def load_state_dict(self, state: dict) -> None:
        self.above_chance = state.get("above_chance")
        self.measured = state.get("measured")
        self.embeddings = state.get("embeddings")
        self.last_memory = state.get("last_memory")
