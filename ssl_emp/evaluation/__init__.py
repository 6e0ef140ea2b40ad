"""The reusable parts of evaluation: frozen features and kNN. The engine's online monitor and the ``eval``
commands both build on them; they import nothing from either."""

from ssl_emp.evaluation.features import adapt_bank, extract_features, load_eval_banks
from ssl_emp.evaluation.knn import knn_accuracy, knn_rankings

__all__ = ["adapt_bank", "extract_features", "knn_accuracy", "knn_rankings", "load_eval_banks"]
