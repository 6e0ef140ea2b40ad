"""The reusable parts of evaluation: a pretrained backbone, its frozen features, kNN and a linear classifier.
The engine's online monitor and the ``eval`` commands both build on them; they import nothing from either."""

from ssl_emp.evaluation.features import adapt_bank, extract_features, load_eval_banks
from ssl_emp.evaluation.knn_classifier import knn_accuracy, knn_rankings
from ssl_emp.evaluation.linear_classifier import logit_accuracy, topk_accuracy, train_linear_classifier
from ssl_emp.evaluation.pretrained import FrozenFeatures, PretrainedBackbone, frozen_features, load_pretrained

__all__ = [
    "FrozenFeatures",
    "PretrainedBackbone",
    "adapt_bank",
    "extract_features",
    "frozen_features",
    "knn_accuracy",
    "knn_rankings",
    "load_eval_banks",
    "load_pretrained",
    "logit_accuracy",
    "topk_accuracy",
    "train_linear_classifier",
]
