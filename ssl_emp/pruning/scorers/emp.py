"""``emp``: score_i = loss_i + beta * memory_i (Enhance Memory Pruning, arXiv 2408.16031).

The paper's supervised memory term is the prediction entropy, ``CE(x, y) + beta * H(softmax(f(x)))``
(:func:`supervised_emp_score`). For contrastive SSL it leaves the memory term open; the forms on offer,
all computed from the same forward pass that trains the sample:

- ``disagreement``: ``1 - cos(z1, z2)``; high while the two views are not yet mapped together
  ("keep what is not yet remembered").
- ``entropy``: ``H(softmax row)``, the entropy of the sample's contrastive softmax over the batch,
  averaged over its two anchor rows; the direct analogue of the supervised form.
- ``forgetting``: ``1 - p(positive)``, one minus the softmax probability of the sample's own positive.
- ``agreement``: ``cos(z1, z2)``; high once the views agree ("keep consolidating what is being remembered").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_emp.methods.base import MethodOutput
from ssl_emp.pruning.scorers.base import Scorer

MEMORY_FORMS = {
    "disagreement": lambda out: 1.0 - out.agreement,
    "entropy": lambda out: out.softmax_entropy,
    "forgetting": lambda out: 1.0 - out.positive_prob,
    "agreement": lambda out: out.agreement,
}


def memory_term(output: MethodOutput, form: str) -> torch.Tensor:
    term = MEMORY_FORMS[form](output)
    if term is None:
        raise ValueError(f"EMP memory form '{form}' needs per-sample statistics this method does not return.")
    return term.detach().float()


def supervised_emp_score(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """The paper's supervised form, per sample: ``CE(x, y) + beta * H(softmax(f(x)))``."""
    logits = logits.detach().float()
    log_p = logits.log_softmax(dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return F.cross_entropy(logits, labels, reduction="none") + beta * entropy


class EMPScorer(Scorer):
    def __call__(self, output, table, indices):
        loss = output.per_sample_loss.detach().float()
        if self.cfg.beta == 0:
            return loss
        return loss + self.cfg.beta * memory_term(output, self.cfg.memory)
