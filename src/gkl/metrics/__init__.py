"""Metrics and evaluators by task (classification now; segmentation, retrieval, zero-shot later)."""

from gkl.metrics.base import Evaluator
from gkl.metrics.classification import ClassificationEvaluator, evaluate_classifier

__all__ = ["ClassificationEvaluator", "Evaluator", "evaluate_classifier"]
