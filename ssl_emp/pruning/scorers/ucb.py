"""``ucb``: an upper confidence bound on a sample's loss (Raju et al., 2021).

score_i = mean of the sample's last ``history`` losses + ``ucb_c * sqrt(log t / n_i)``, with ``n_i`` its
visit count and ``t`` the number of epochs so far. The bonus is added when the next epoch is selected, not
when the sample was last seen: a sample left out keeps its ``n_i`` while ``t`` grows, so the less often a
sample has been visited, the more its bound rises, and rarely visited samples come first.
"""

import math

import torch

from ssl_emp.pruning.scorers.base import Scorer


class UCBScorer(Scorer):
    reads = ("ucb_c", "history")

    def __call__(self, output, table, indices, epoch=0):
        # The sample's recent losses including this one (the slot this visit will overwrite holds the oldest).
        window = table.loss_history[indices].clone()
        slot = table.visits[indices] % window.shape[1]
        window[torch.arange(len(indices), device=indices.device), slot] = output.loss.detach().float()
        seen = ~window.isnan()
        return window.nan_to_num(0.0).sum(dim=1) / seen.sum(dim=1).clamp_min(1)

    def selection_scores(self, table, epoch, keep=None):
        bonus = self.cfg.ucb_c * (math.log(epoch + 1) / table.visits.clamp_min(1).double()).sqrt()
        return table.scores + bonus.to(table.scores.dtype)  # unseen samples stay at +inf
