"""The self-supervised losses against their definitions, written out term by term.

SimCLR's NT-Xent (Chen et al. 2020): 2n embeddings of two views of n images; for each embedding i,
its positive is the other view of the same image, and the loss is
-log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t)) with s the cosine similarity, averaged over all 2n.

DINO (Caron et al. 2021): the student's output on one view, sharpened by t_s, is trained towards the
teacher's output on the *other* view, centred (a running mean of the teacher's outputs) and sharpened
by t_t; the teacher's weights follow the student's as an exponential moving average.

The augmentations and projection heads are replaced by fixed views and identities, so the numbers
below depend on nothing but the loss.
"""
import math

import pytest
import torch
from torch import nn

from geed.training import objectives as O


class _Flat(nn.Module):
    """A model whose latent vector is its input, flattened (``features``), with DINO's parts."""

    latent_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.adapt, self.body = nn.Identity(), nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
        with torch.no_grad():
            self.body[1].weight.copy_(torch.eye(4) + 0.1 * torch.arange(16.0).reshape(4, 4) / 16)
            self.body[1].bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))

    def features(self, x):
        return self.body(self.adapt(x))


def _views(monkeypatch, first, second):
    """``augment`` returns ``first`` on its first call of a pair, ``second`` on the next."""
    calls = []

    def fixed(x, gen):
        calls.append(1)
        return first if len(calls) % 2 == 1 else second

    monkeypatch.setattr(O, "augment", fixed)


def _images(seed):
    return torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_simclr_loss_is_nt_xent_with_the_other_view_as_positive(monkeypatch):
    a, b = _images(0), _images(1)
    _views(monkeypatch, a, b)
    model = _Flat().double()
    obj = O.SimCLR(model, temperature=0.5).double()
    obj.proj = nn.Identity()
    got = obj.loss(model, a, None, torch.Generator()).item()

    with torch.no_grad():
        z = [v / v.norm() for v in model.features(torch.cat([a, b]))]
    n, t, total = 3, 0.5, 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = {k: float(z[i] @ z[k]) / t for k in range(2 * n) if k != i}
        total += -(sims[pos] - math.log(sum(math.exp(s) for s in sims.values())))
    assert got == pytest.approx(total / (2 * n), rel=1e-12)


def test_dino_loss_matches_each_view_with_the_teachers_output_on_the_other(monkeypatch):
    a, b = _images(2), _images(3)
    _views(monkeypatch, a, b)
    model = _Flat().double()
    obj = O.DINO(model, dim=4, t_student=0.1, t_teacher=0.04, center_momentum=0.9).double()
    obj.head, obj.teacher_head = nn.Identity(), nn.Identity()
    with torch.no_grad():  # a teacher that differs from the student, and a centre that is not zero
        obj.teacher_body[1].weight.mul_(0.7)
        obj.center.copy_(torch.tensor([[0.2, -0.1, 0.05, 0.3]]))
    center = obj.center.clone()
    got = obj.loss(model, a, None, torch.Generator()).item()

    with torch.no_grad():
        views = torch.cat([a, b])
        student = model.features(views) / 0.1
        t_out = obj.teacher_body(views)
        teacher = torch.softmax((t_out - center) / 0.04, dim=1)
        logp = torch.log_softmax(student, dim=1)
        n = 3
        cross = [-(teacher[j] * logp[i]).sum() for i in range(2 * n) for j in [(i + n) % (2 * n)]]
        want = float(torch.stack(cross).mean())
        new_center = 0.9 * center + 0.1 * t_out.mean(0, keepdim=True)
    assert got == pytest.approx(want, rel=1e-12)
    torch.testing.assert_close(obj.center, new_center, rtol=1e-12, atol=1e-12)


def test_dinos_teacher_is_a_moving_average_of_the_student():
    model = _Flat().double()
    obj = O.DINO(model, dim=4, momentum=0.9).double()
    before = {k: v.clone() for k, v in obj.teacher_body.state_dict().items()}
    with torch.no_grad():
        for p in model.body.parameters():
            p.add_(1.0)
    obj.after_step(model, 1, 10)
    after, student = obj.teacher_body.state_dict(), model.body.state_dict()
    for k in before:
        torch.testing.assert_close(after[k], 0.9 * before[k] + 0.1 * student[k], rtol=1e-12, atol=1e-12)


def test_cross_entropy_sees_the_augmented_batch_and_adds_the_weighted_invariance_penalty(monkeypatch):
    """The supervised loss is the cross-entropy of the model on the *augmented* batch, plus
    ``invariance_weight`` times the LI penalty (here a stand-in of known value) on that batch."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    x, y = _images(4), torch.tensor([0, 2, 1])
    flipped = lambda x, gen: x.flip(-1)  # noqa: E731
    seen = []
    monkeypatch.setattr(O, "logit_invariance_penalty", lambda m, xs, logits, group, gen: seen.append(xs) or torch.tensor(2.5, dtype=torch.float64))
    with torch.no_grad():
        plain = float(nn.functional.cross_entropy(model(x.flip(-1)), y))
    assert O.CrossEntropy(flipped).loss(model, x, y, None).item() == pytest.approx(plain, rel=1e-12)
    assert O.CrossEntropy(flipped, invariance_weight=0.3).loss(model, x, y, None).item() == pytest.approx(plain + 0.3 * 2.5, rel=1e-12)
    assert torch.equal(seen[-1], x.flip(-1))
    assert O.CrossEntropy(None).loss(model, x, y, None).item() != pytest.approx(plain)
