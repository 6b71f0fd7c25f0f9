"""Optimisers beyond torch.optim: Lion (Chen et al. 2023). Selected by ``train.optimizer``."""
from .lion import Lion  # noqa: F401
