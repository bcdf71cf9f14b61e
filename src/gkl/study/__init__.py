"""Studies: named settings × seeds (and teacher chains) run as ordinary runs, then summarised.

``run_sweep(STUDY.yaml)`` backs ``gkl sweep``; the study file format is in :mod:`gkl.study.study_file`.
"""

from .execute import SweepResult, is_finished, run_sweep
from .study_file import RunSpec, Study, load_study

__all__ = ["RunSpec", "Study", "SweepResult", "is_finished", "load_study", "run_sweep"]
