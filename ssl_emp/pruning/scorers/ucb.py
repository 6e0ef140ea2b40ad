"""``ucb``: mean of the sample's recent losses + c * their spread (Raju et al., 2021)."""


from ssl_emp.pruning.scorers.base import Scorer


class UCBScorer(Scorer):
    def __call__(self, output, table, indices):
        history = table.loss_history[indices]  # already holds this step's loss (recorded first)
        seen = ~history.isnan()
        count = seen.sum(dim=1).clamp_min(1)
        mean = history.nan_to_num(0.0).sum(dim=1) / count
        var = ((history - mean[:, None]).nan_to_num(0.0).pow(2)).sum(dim=1) / (count - 1).clamp_min(1)
        return mean + self.cfg.ucb_c * var.sqrt()
