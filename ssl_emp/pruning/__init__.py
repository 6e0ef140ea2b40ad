"""Dynamic data pruning: score x selection (see DESIGN.md, "The pruning engine")."""

from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.pruner import Pruner
from ssl_emp.pruning.scorers import MEMORY_FORMS, SCORERS, supervised_emp_score
from ssl_emp.pruning.selectors import SELECTORS
from ssl_emp.pruning.stats import gini
from ssl_emp.pruning.table import ScoreTable

__all__ = ["EpochPlan", "Pruner", "MEMORY_FORMS", "SCORERS", "SELECTORS", "ScoreTable", "gini",
           "supervised_emp_score"]
