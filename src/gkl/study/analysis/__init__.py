"""Analyses of trained models: class-mean scores (GKL Fig. 3), per-class margins (Eq. 14, Fig. 4c),
t-SNE of penultimate features (Fig. 4a/b), feature statistics (Kim et al.'s δ∞ analysis), and
the numerical KL/DKL equivalence check behind ``gkl check``."""

from .features import capture_features, collect_outputs, feature_statistics, find_classifier
from .scores import class_margins, class_mean_scores, margins_of
from .tsne import tsne_embedding

__all__ = [
    "capture_features",
    "class_margins",
    "class_mean_scores",
    "collect_outputs",
    "feature_statistics",
    "find_classifier",
    "margins_of",
    "tsne_embedding",
]
