"""Moved to :mod:`gkl.metrics.classification`; this name stays importable for now."""

from gkl.metrics.classification import evaluate_classifier

__all__ = ["evaluate_classifier"]
