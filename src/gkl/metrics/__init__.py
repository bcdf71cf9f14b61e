"""Metrics and evaluators by task: classification, segmentation (zero-shot and retrieval in
:mod:`gkl.metrics.zeroshot` / :mod:`gkl.metrics.retrieval`, which need the ``clip`` extra)."""

from gkl.metrics.base import Evaluator
from gkl.metrics.classification import ClassificationEvaluator, evaluate_classifier
from gkl.metrics.segmentation import SegmentationEvaluator, SegmentationMetric

__all__ = ["ClassificationEvaluator", "Evaluator", "SegmentationEvaluator", "SegmentationMetric", "evaluate_classifier"]
