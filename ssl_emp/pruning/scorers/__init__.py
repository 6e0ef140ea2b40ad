"""Scorers by name. A new scorer is one file plus one line here."""

from ssl_emp.pruning.scorers.base import Scorer
from ssl_emp.pruning.scorers.emp import MEMORY_FORMS, EMPScorer, supervised_emp_score
from ssl_emp.pruning.scorers.loss import LossScorer
from ssl_emp.pruning.scorers.ucb import UCBScorer

SCORERS: dict[str, type[Scorer]] = {
    "loss": LossScorer,
    "emp": EMPScorer,
    "ucb": UCBScorer,
}

__all__ = ["SCORERS", "MEMORY_FORMS", "Scorer", "supervised_emp_score"]
