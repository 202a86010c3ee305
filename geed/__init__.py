"""geed: measure how far a PyTorch model is from invariant or equivariant under a finite group.

Implements the G-empirical equivariance deviation (G-EED) of Kvinge et al. (2022) at any layer,
with the invariance errors of Moskalev et al. (2023) beside it. See the README for an example.
"""
from geed.actions import Action, InducedAction, SpatialAction, TrivialAction, field_type_action
from geed.orbit import OUTPUT, Report, evaluate, forward_outputs, layer_names, orbit_outputs
from geed.groups import CyclicGroup, DihedralGroup, Element, Group, ReflectionGroup, TranslationGroup, get_group
from geed.metrics import (
    EEDResult,
    channelwise_eed,
    geed,
    latent_eed,
    logit_invariance_error,
    mean_pairwise,
    orbit_mean,
    prediction_invariance_error,
    softmax_eed,
)
from geed.stats import bootstrap_ci, summarise, t_interval

__version__ = "0.1.0"

__all__ = [
    "Action", "InducedAction", "SpatialAction", "TrivialAction", "field_type_action",
    "OUTPUT", "Report", "evaluate", "forward_outputs", "layer_names", "orbit_outputs",
    "CyclicGroup", "DihedralGroup", "Element", "Group", "ReflectionGroup", "TranslationGroup", "get_group",
    "EEDResult", "channelwise_eed", "geed", "latent_eed", "logit_invariance_error", "mean_pairwise",
    "orbit_mean", "prediction_invariance_error", "softmax_eed",
    "bootstrap_ci", "summarise", "t_interval",
]
