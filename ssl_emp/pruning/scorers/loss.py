"""``loss``: score_i = loss_i, the per-sample contrastive loss (InfoBatch and top-k baselines)."""

from ssl_emp.pruning.scorers.base import Scorer


class LossScorer(Scorer):
    def __call__(self, output, table, indices, epoch=0):
        return output.loss.detach().float()
