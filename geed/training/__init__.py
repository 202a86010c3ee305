"""Seeded, resumable training: one loop (:func:`train`) for every objective (cross-entropy,
LI-regularised, contrastive, self-distillation) and both tasks (digits: :class:`TrainConfig`; image
patches: :class:`FitConfig`), with its checkpoints (:mod:`~geed.training.checkpoints`), objectives
(:mod:`~geed.training.objectives`) and augmentations (:mod:`~geed.training.augmentation`)."""
from geed.training.augmentation import augment, random_rotation
from geed.training.loop import (
    OBJECTIVES,
    FitConfig,
    TrainConfig,
    TrainResult,
    accuracy,
    accuracy_of,
    load_checkpoint,
    prune,
    train,
    training_device,
)

__all__ = ["train", "prune", "TrainConfig", "FitConfig", "TrainResult", "OBJECTIVES", "accuracy", "accuracy_of", "load_checkpoint",
           "training_device", "augment", "random_rotation"]
