"""Training objectives. Each is a module (its own heads, a teacher, ...) with

* ``loss(model, x, y, gen)``: the loss of one batch (augmentations drawn from ``gen``);
* ``after_step(model, it, total)``: an update after the optimiser's step (DINO's teacher);
* ``kept(model)``: the model that is kept and measured.

Objectives:

* :class:`CrossEntropy`: supervised, with an optional augmentation and the logit-invariance (LI)
  regulariser of Moskalev et al. (2023) with weight ``invariance_weight``.
* :class:`SimCLR`: the contrastive NT-Xent loss of SimCLR (Chen et al. 2020) between two augmented
  views of each image, through a two-layer projection head; no labels.
* :class:`DINO`: self-distillation without labels and without a contrastive term (Caron et al.
  2021): a student matches the sharpened, centred output of a teacher that is an exponential moving
  average of the student; the teacher's backbone is the model that is kept, as DINO publishes its teacher.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from geed.groups import get_group
from geed.measures.saliency import logit_invariance_penalty
from geed.training.augmentation import augment

__all__ = ["Objective", "CrossEntropy", "SimCLR", "DINO", "OBJECTIVES"]

OBJECTIVES = ("supervised", "simclr", "dino")

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _on(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x.to(next(model.parameters()).device)


class Objective(nn.Module):
    """A training loss with its own modules; ``kept(model)`` is the model to keep and measure."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model: nn.Module, it: int, total: int) -> None:
        pass

    def kept(self, model: nn.Module) -> nn.Module:
        return model


class CrossEntropy(Objective):
    """Cross-entropy on the labels, after ``augmentation`` when given; plus ``invariance_weight``
    times the LI penalty under ``invariance_group`` when that weight is positive."""

    def __init__(self, augmentation: Augmentation | None = None, invariance_weight: float = 0.0, invariance_group: str = "C8") -> None:
        super().__init__()
        self.augmentation, self.invariance_weight = augmentation, float(invariance_weight)
        self.group = get_group(invariance_group, mask=True) if invariance_weight else None

    def loss(self, model, x, y, gen):
        if self.augmentation is not None:
            x = self.augmentation(x, gen)
        x, y = _on(model, x), _on(model, y)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if self.invariance_weight:
            loss = loss + self.invariance_weight * logit_invariance_penalty(model, x, logits, self.group, gen)
        return loss


def _projector(d: int, out: int) -> nn.Module:
    hidden = max(32, min(2048, d))
    return nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


class SimCLR(Objective):
    def __init__(self, model: nn.Module, temperature: float = 0.2, dim: int = 128) -> None:
        super().__init__()
        self.proj, self.t = _projector(model.latent_dim, dim), temperature

    def loss(self, model, x, y, gen):
        z = F.normalize(self.proj(model.features(_on(model, torch.cat([augment(x, gen), augment(x, gen)])))), dim=1)
        n = x.shape[0]
        sim = z @ z.t() / self.t
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        target = _on(model, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]))
        return F.cross_entropy(sim, target)


class DINO(Objective):
    def __init__(self, model: nn.Module, dim: int = 256, t_student: float = 0.1, t_teacher: float = 0.04,
                 momentum: float = 0.99, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.head = _projector(model.latent_dim, dim)
        self.teacher_body = copy.deepcopy(model.body)
        self.teacher_head = copy.deepcopy(self.head)
        for p in list(self.teacher_body.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, dim))
        self.ts, self.tt, self.m, self.cm = t_student, t_teacher, momentum, center_momentum

    def loss(self, model, x, y, gen):
        views = _on(model, torch.cat([augment(x, gen), augment(x, gen)]))
        n = x.shape[0]
        student = self.head(model.features(views)) / self.ts
        with torch.no_grad():
            t_out = self.teacher_head(self.teacher_body(model.adapt(views)))
            teacher = F.softmax((t_out - self.center) / self.tt, dim=1)
            self.center.mul_(self.cm).add_((1 - self.cm) * t_out.mean(0, keepdim=True))
        logp = F.log_softmax(student, dim=1)
        # each view's student matches the teacher's output on the other view
        return -0.5 * ((teacher[n:] * logp[:n]).sum(1).mean() + (teacher[:n] * logp[n:]).sum(1).mean())

    @torch.no_grad()
    def after_step(self, model, it, total):
        for t, s in ((self.teacher_body, model.body), (self.teacher_head, self.head)):
            for pt, ps in zip(t.parameters(), s.parameters()):
                pt.mul_(self.m).add_((1 - self.m) * ps.detach())
            for bt, bs in zip(t.buffers(), s.buffers()):
                bt.copy_(bs)

    def kept(self, model):
        out = copy.deepcopy(model)
        out.body.load_state_dict(self.teacher_body.state_dict())
        return out
