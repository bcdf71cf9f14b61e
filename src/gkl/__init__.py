"""gkl: the Kullback-Leibler loss family (KL, DKL, IKL, GKL) of Cui et al. for PyTorch."""

__version__ = "0.1.0"
