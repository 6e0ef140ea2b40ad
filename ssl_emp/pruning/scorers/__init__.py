"""Scorers by name. A new scorer is one file plus one line here. Each class loads on first use, so the names are
known without torch (the config checks them before it loads)."""

from ssl_emp.pruning.registry import LazyRegistry

SCORERS = LazyRegistry(
    {
        "loss": "ssl_emp.pruning.scorers.loss:LossScorer",
        "emp": "ssl_emp.pruning.scorers.emp:EMPScorer",
        "ucb": "ssl_emp.pruning.scorers.ucb:UCBScorer",
    }
)


def __getattr__(name: str):
    if name in ("MEMORY_FORMS", "supervised_emp_score"):
        from ssl_emp.pruning.scorers import emp

        return getattr(emp, name)
    if name == "Scorer":
        from ssl_emp.pruning.scorers.base import Scorer

        return Scorer
    raise AttributeError(f"module 'ssl_emp.pruning.scorers' has no attribute '{name}'")


__all__ = ["SCORERS", "MEMORY_FORMS", "Scorer", "supervised_emp_score"]
