"""Metrics and evaluators by task (classification now; segmentation, retrieval, zero-shot later)."""

from gkl.metrics.segmentation import SegmentationEvaluator, SegmentationMetric  # noqa: E402

__all__ = ["SegmentationEvaluator", "SegmentationMetric"]
