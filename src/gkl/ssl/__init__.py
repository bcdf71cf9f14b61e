"""Semi-supervised learning with the KL loss family: the consistency losses of FixMatch / Mean-Teacher.

The algorithms themselves are objectives of the one engine (:mod:`gkl.objectives.ssl`);
their data pipeline (labelled split, weak/strong views) is :mod:`gkl.data.ssl`.
"""

from gkl.ssl.consistency import CONSISTENCY_LOSSES, RENAMED_CONSISTENCY_LOSSES, consistency_loss

__all__ = ["CONSISTENCY_LOSSES", "RENAMED_CONSISTENCY_LOSSES", "consistency_loss"]
