"""Seeded, resumable training of the registry's models on patch tasks: supervised, SimCLR-style, DINO-style.

``fit(config, directory, init_body)`` trains one :class:`~geed.zoo.ZooModel` and saves a
checkpoint at every step of ``config.steps()`` (0, every ``record_every`` iterations, the last),
written atomically with the optimiser, the objective's own modules (projection heads, the DINO
teacher) and the random state; an interrupted run resumes from its last readable checkpoint.

Objectives (``config.objective``):

* ``supervised``: cross-entropy on the task's labels.
* ``simclr``: the contrastive NT-Xent loss of SimCLR (Chen et al. 2020) between two augmented views
  of each image, through a two-layer projection head; no labels.
* ``dino``: self-distillation without labels and without a contrastive term (Caron et al. 2021):
  a student matches the sharpened, centred output of a teacher that is an exponential moving average
  of the student; the teacher's backbone is the model that is kept, as DINO publishes its teacher.

Every objective sees the same augmentations (:func:`augment`): a random horizontal flip, a random
resized crop and a brightness/contrast jitter -- the flip is among them, as in all three of the
paper's training recipes.
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .patches import SIZE, get_task
from .train import _discard_corrupt, _latest, _save, accuracy_of, cpu_state, read_checkpoint, restore_rng, rng_states, training_device
from .zoo import ZooModel, build_zoo_model

__all__ = ["FitConfig", "FitResult", "fit", "augment", "OBJECTIVES", "load_fitted"]

OBJECTIVES = ("supervised", "simclr", "dino")


@dataclass(frozen=True)
class FitConfig:
    arch: str = "resnet50-tiny"
    task: str = "orientation-free"
    objective: str = "supervised"
    init: str = "scratch"  # or a label of the pretrained weights the body starts from
    seed: int = 0
    iterations: int = 200
    record_every: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    augment: bool = False  # flip / crop / jitter augmentation (always on for the self-supervised objectives)
    size: int = SIZE  # patch size in pixels

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {self.objective!r}")
        if self.iterations < 0 or self.record_every < 1 or self.batch_size < 2:
            raise ValueError("iterations must be >= 0, record_every >= 1 and batch_size >= 2")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive; got {self.lr}")
        get_task(self.task, self.size)

    def steps(self) -> list[int]:
        return sorted(set(range(0, self.iterations, self.record_every)) | {self.iterations})

    def name(self) -> str:
        init = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.init)
        return (f"{self.arch}-{self.task}-{self.objective}-init_{init}-s{self.seed}-it{self.iterations}-r{self.record_every}"
                f"-b{self.batch_size}-lr{self.lr:g}-aug{int(self.augment)}" + ("" if self.size == SIZE else f"-px{self.size}"))


@dataclass
class FitResult:
    config: FitConfig
    checkpoints: dict[int, Path] = field(default_factory=dict)
    test_accuracy: float = float("nan")
    seconds: float = 0.0

    def model(self, step: int | None = None) -> ZooModel:
        return load_fitted(self.config, self.checkpoints[max(self.checkpoints) if step is None else step])


def _on(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x.to(next(model.parameters()).device)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, random resized crop (70-100% of the side) and brightness/contrast jitter (on the CPU)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    scale = 0.7 + 0.3 * torch.rand(n, generator=gen)
    shift = (1 - scale)[:, None] * (2 * torch.rand(n, 2, generator=gen) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale, scale, shift
    x = F.grid_sample(x, F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False), align_corners=False)
    bright = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean * bright).clamp(0, 1)


# ----------------------------------------------------------------------------- objectives
class Objective(nn.Module):
    """A training loss with its own modules; ``kept(model)`` is the model to keep and measure."""

    def loss(self, model: ZooModel, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model: ZooModel, it: int, total: int) -> None:
        pass

    def kept(self, model: ZooModel) -> ZooModel:
        return model


class Supervised(Objective):
    def __init__(self, model: ZooModel, use_augment: bool) -> None:
        super().__init__()
        self.use_augment = use_augment

    def loss(self, model, x, y, gen):
        return F.cross_entropy(model(_on(model, augment(x, gen) if self.use_augment else x)), _on(model, y))


def _projector(d: int, out: int) -> nn.Module:
    hidden = max(32, min(2048, d))
    return nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


class SimCLR(Objective):
    def __init__(self, model: ZooModel, temperature: float = 0.2, dim: int = 128) -> None:
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
    def __init__(self, model: ZooModel, dim: int = 256, t_student: float = 0.1, t_teacher: float = 0.04,
                 momentum: float = 0.99, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.head = _projector(model.latent_dim, dim)
        self.teacher_body = copy.deepcopy(model.body)
        self.teacher_head = copy.deepcopy(self.head)
        for p in list(self.teacher_body.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, dim))
        self.ts, self.tt, self.m, self.cm = t_student, t_teacher, momentum, center_momentum

    def trainable(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

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


def _objective(config: FitConfig, model: ZooModel) -> Objective:
    if config.objective == "supervised":
        return Supervised(model, config.augment)
    return SimCLR(model) if config.objective == "simclr" else DINO(model)


# ----------------------------------------------------------------------------- the loop
def _slim(path: Path) -> None:
    """Reduce a checkpoint to what measuring needs (the kept model and its step), if not done yet."""
    try:
        state = read_checkpoint(path)
    except RuntimeError:
        return  # an unreadable checkpoint is found and retrained when the run is reused
    if set(state) <= {"kept", "step"}:
        return
    _save({"kept": state["kept"], "step": state["step"]}, path)

def load_fitted(config: FitConfig, path: Path) -> ZooModel:
    model = build_zoo_model(config.arch, get_task(config.task, config.size).n_classes)
    state = read_checkpoint(path)
    model.load_state_dict(state["kept"])
    return model.eval()


def fit(config: FitConfig, directory: str | os.PathLike, init_body: Callable[[ZooModel], None] | None = None,
        test_points: int = 300, progress: bool = True, log_every: int = 50) -> FitResult:
    """Train (or resume, or reload) one model. ``init_body`` loads pretrained weights into a fresh model."""
    directory = Path(directory) / config.name()
    directory.mkdir(parents=True, exist_ok=True)
    meta_path, steps = directory / "result.json", config.steps()
    ckpt = {s: directory / f"step{s:06d}.pt" for s in steps}
    if meta_path.exists() and all(p.exists() for p in ckpt.values()):
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("config") == asdict(config) and not _discard_corrupt(directory, steps, f"fit {config.name()}"):
                return FitResult(config, ckpt, meta["test_accuracy"], meta["seconds"])
        except (ValueError, KeyError):
            pass  # unreadable summary: the checkpoints below are checked one by one
    task = get_task(config.task, config.size)
    model = build_zoo_model(config.arch, task.n_classes, seed=config.seed)
    if init_body is not None:
        init_body(model)
    objective = _objective(config, model)
    device = training_device()
    model, objective = model.to(device), objective.to(device)
    params = list(model.parameters()) + [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    gen = torch.Generator().manual_seed(20_000 + config.seed)

    def snapshot(it: int) -> None:
        """The full state (what resuming needs) in the newest checkpoint only; the earlier recorded
        checkpoints keep the measured model alone, which bounds the disk a run takes."""
        _save({"model": cpu_state(model), "objective": cpu_state(objective), "optimizer": cpu_state(opt),
               "generator": gen.get_state(), "rng": rng_states(), "kept": cpu_state(objective.kept(model)), "step": it}, ckpt[it])
        earlier = [s for s in steps if s < it]
        if earlier and ckpt[earlier[-1]].exists():
            _slim(ckpt[earlier[-1]])

    start, state = _latest(directory, steps)
    if state is not None:
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        restore_rng(state)
        if progress:
            print(f"[fit {config.name()}] resuming from step {start}", flush=True)
    else:
        start = 0
        snapshot(0)
    t0, running, since = time.time(), 0.0, 0
    model.train()
    objective.train()
    for it in range(start + 1, config.iterations + 1):
        x, y = task.sample("train", config.batch_size, gen)
        opt.zero_grad(set_to_none=True)
        loss = objective.loss(model, x, y, gen)
        loss.backward()
        opt.step()
        objective.after_step(model, it, config.iterations)
        running, since = running + loss.item(), since + 1
        if it in ckpt:
            snapshot(it)
        if progress and (it % log_every == 0 or it == config.iterations):
            print(f"[fit {config.name()}] step {it}/{config.iterations} loss {running / since:.3f} "
                  f"(mean of the last {since} steps; {time.time() - t0:.0f} s)", flush=True)
            running, since = 0.0, 0
    kept = objective.kept(model).eval()
    acc = float("nan")
    if config.objective == "supervised":
        acc = accuracy_of(kept, *task.fixed("test", test_points, seed=99))
    result = FitResult(config, ckpt, acc, time.time() - t0)
    meta_path.write_text(json.dumps({"config": asdict(config), "test_accuracy": acc, "seconds": result.seconds}))
    if progress and config.objective == "supervised":
        print(f"[fit {config.name()}] test accuracy {acc:.3f}", flush=True)
    return result
