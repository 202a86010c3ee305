"""Models, in one registry (:func:`create_model`, :func:`list_models`): the digit CNNs
(:mod:`~geed.models.digits`) and the ImageNet architectures with their published weights
(:mod:`~geed.models.zoo`)."""
from geed.models.registry import create_model, is_digit_model, list_models

__all__ = ["create_model", "list_models", "is_digit_model"]
