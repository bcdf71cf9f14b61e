"""Metrics and evaluators by task (classification now; segmentation, retrieval, zero-shot later)."""
