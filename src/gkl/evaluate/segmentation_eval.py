"""``gkl evaluate RUN`` for a segmentation run: moved to the segmentation task (:mod:`gkl.tasks.segmentation`);
these names stay importable."""

from gkl.tasks.segmentation import evaluate_segmentation_run, format_iou_table

__all__ = ["evaluate_segmentation_run", "format_iou_table"]
