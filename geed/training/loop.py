"""One seeded, resumable training loop for every objective and task.

``train(config, directory, ...)`` trains one model (or resumes it, or reloads a finished run) and
returns a :class:`TrainResult`. The configuration says what is trained:

* :class:`TrainConfig`: a digit model on rotated digits, cross-entropy with random-rotation
  augmentation and a cosine learning-rate schedule, optionally LI-regularised (Moskalev et al.).
* :class:`FitConfig`: an ImageNet architecture on an image-patch task, with the ``supervised``,
  ``simclr`` or ``dino`` objective (:mod:`geed.training.objectives`), from scratch or from weights
  that ``init_body`` loads.

A checkpoint is saved at every step of ``config.steps()`` (0, every ``checkpoint_every`` /
``record_every`` iterations, the last), atomically. The newest checkpoint holds the whole training
state (model, objective, optimiser, the batch generator and torch's global random states); once a
newer one is written, an earlier checkpoint keeps the measured model alone, which bounds the disk a
run takes. An interrupted run resumes from its newest readable checkpoint and ends where an
uninterrupted run ends; a corrupt checkpoint of a finished run is named, deleted with every later
one, and retrained identically. Progress is printed.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Union

import torch
from torch import nn

from geed.data.digits import DigitData
from geed.data.patches import SIZE, get_task
from geed.models import create_model
from geed.models.digits import ARCHITECTURE_REVISION
from geed.training import checkpoints as ck
from geed.training.augmentation import augment, random_rotation
from geed.training.objectives import DINO, OBJECTIVES, CrossEntropy, Objective, SimCLR

__all__ = ["TrainConfig", "FitConfig", "TrainResult", "train", "prune", "accuracy", "accuracy_of", "load_checkpoint",
           "training_device", "OBJECTIVES"]


def training_device() -> torch.device:
    """Where models are trained: ``$GEED_DEVICE`` when set, else CUDA when available, else the CPU.
    Batches are drawn and augmented on the CPU (seeded generators), then moved; checkpoints are
    saved from the CPU, so they load anywhere."""
    name = os.environ.get("GEED_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"GEED_DEVICE={name!r} is not a device torch knows ({exc})") from None


def accuracy(model: nn.Module, data: DigitData, batch: int = 500) -> float:
    return accuracy_of(model, data.x, data.y, batch)


@torch.no_grad()
def accuracy_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Fraction of ``x`` classified as ``y``, in batches on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for s in range(0, len(y), batch):
        correct += int((model(x[s : s + batch].to(device)).argmax(1).cpu() == y[s : s + batch]).sum())
    return correct / max(1, len(y))


class _Run(NamedTuple):
    """What the loop needs from a configuration: built in the configuration's own order of random draws."""

    model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    sample: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    evaluate: Callable[[nn.Module], float]


# ----------------------------------------------------------------------------- digit models
@dataclass(frozen=True)
class TrainConfig:
    family: str = "cnn"
    width: float = 0.125
    seed: int = 0
    iterations: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    checkpoint_every: int = 100
    augment: bool = True
    schedule: str = "cosine"  # learning rate: "cosine" (decays to 0 at the last iteration) or "constant"
    invariance_weight: float = 0.0  # nu of the LI regulariser of Moskalev et al. (0: none)
    invariance_group: str = "C8"

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0; got {self.iterations}")
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("batch_size and checkpoint_every must be positive")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive; got {self.lr}")
        if self.invariance_weight < 0:
            raise ValueError(f"invariance_weight must be >= 0; got {self.invariance_weight}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant'; got {self.schedule!r}")

    def lr_at(self, it: int) -> float:
        """Learning rate of iteration ``it`` (1-based): a pure function of the step, so resuming needs no state."""
        if self.schedule == "constant" or self.iterations <= 1:
            return self.lr
        return 0.5 * self.lr * (1 + math.cos(math.pi * (it - 1) / self.iterations))

    def steps(self) -> list[int]:
        return sorted(set(range(0, self.iterations, self.checkpoint_every)) | {self.iterations})

    def name(self) -> str:
        rev = ARCHITECTURE_REVISION.get(self.family, 1)
        return (f"{self.family}{f'.r{rev}' if rev > 1 else ''}-w{self.width:g}-s{self.seed}-it{self.iterations}-b{self.batch_size}-lr{self.lr:g}"
                f"-{self.schedule}-wd{self.weight_decay:g}-aug{int(self.augment)}"
                + (f"-inv{self.invariance_weight:g}{self.invariance_group}" if self.invariance_weight else ""))

    def new_model(self, seed: int | None = None) -> nn.Module:
        return create_model(self.family, width=self.width, seed=seed)

    def _run(self, device, train_data: DigitData | None, test_data: DigitData | None, init_body, test_points: int) -> _Run:
        if train_data is None or len(train_data) == 0:
            raise ValueError("no training data")
        torch.manual_seed(self.seed)
        model = self.new_model(self.seed).to(device)
        objective = CrossEntropy(random_rotation if self.augment else None, self.invariance_weight, self.invariance_group).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(10_000 + self.seed)

        def sample():
            idx = torch.randint(0, len(train_data), (self.batch_size,), generator=gen)
            return train_data.x[idx], train_data.y[idx]

        def evaluate(kept: nn.Module) -> float:
            return accuracy(kept, test_data) if test_data is not None else float("nan")

        return _Run(model, objective, opt, gen, sample, evaluate)


# ----------------------------------------------------------------------------- ImageNet architectures on patch tasks
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

    def lr_at(self, it: int) -> float:
        return self.lr

    def steps(self) -> list[int]:
        return sorted(set(range(0, self.iterations, self.record_every)) | {self.iterations})

    def name(self) -> str:
        init = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.init)
        return (f"{self.arch}-{self.task}-{self.objective}-init_{init}-s{self.seed}-it{self.iterations}-r{self.record_every}"
                f"-b{self.batch_size}-lr{self.lr:g}-aug{int(self.augment)}" + ("" if self.size == SIZE else f"-px{self.size}"))

    def new_model(self, seed: int | None = None) -> nn.Module:
        return create_model(self.arch, n_classes=get_task(self.task, self.size).n_classes, seed=seed)

    def _run(self, device, train_data, test_data, init_body, test_points: int) -> _Run:
        task = get_task(self.task, self.size)
        model = self.new_model(self.seed)
        if init_body is not None:
            init_body(model)
        if self.objective == "supervised":
            objective: Objective = CrossEntropy(augment if self.augment else None)
        else:
            objective = SimCLR(model) if self.objective == "simclr" else DINO(model)
        model, objective = model.to(device), objective.to(device)
        params = list(model.parameters()) + [p for p in objective.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr)
        gen = torch.Generator().manual_seed(20_000 + self.seed)

        def evaluate(kept: nn.Module) -> float:
            if self.objective != "supervised":
                return float("nan")
            return accuracy_of(kept, *task.fixed("test", test_points, seed=99))

        return _Run(model, objective, opt, gen, lambda: task.sample("train", self.batch_size, gen), evaluate)


Config = Union[TrainConfig, FitConfig]


def load_checkpoint(config: Config, path: Path) -> nn.Module:
    """The measured model of one checkpoint, in eval mode on the CPU."""
    # a digit model is rebuilt with its run's seed, as when it was trained (the global random state
    # after loading is then the same whatever was loaded before)
    model = config.new_model(config.seed if isinstance(config, TrainConfig) else None)
    ck.load_state(model, ck.kept_state(ck.read_checkpoint(path)))
    return model.eval()


@dataclass
class TrainResult:
    config: Config
    checkpoints: dict[int, Path] = field(default_factory=dict)
    test_accuracy: float = float("nan")
    seconds: float = 0.0
    resumed_from: int = 0  # 0: trained from the start; config.iterations: a finished run reloaded

    def model(self, step: int | None = None) -> nn.Module:
        return load_checkpoint(self.config, self.checkpoints[max(self.checkpoints) if step is None else step])


def prune(result: TrainResult) -> TrainResult:
    """Delete every recorded checkpoint of a finished run but the last, reduce that one to the
    measured model, and mark the run pruned: what is measured at the recorded steps must have been measured
    (and cached) first. Bounds the disk of a profile with many recorded steps; see :func:`train`."""
    final = max(result.checkpoints)
    meta_path = result.checkpoints[final].parent / "result.json"
    meta = json.loads(meta_path.read_text())
    for step, path in result.checkpoints.items():
        if step != final:
            path.unlink(missing_ok=True)
    ck.slim(result.checkpoints[final])  # a finished run is never resumed: the measured model is enough
    meta["pruned"] = True
    meta_path.write_text(json.dumps(meta))
    result.checkpoints = {final: result.checkpoints[final]}
    return result


# ----------------------------------------------------------------------------- the loop
def train(config: Config, directory: str | os.PathLike, train_data: DigitData | None = None, test_data: DigitData | None = None,
          init_body: Callable[[nn.Module], None] | None = None, test_points: int = 300, progress: bool = True,
          log_every: int = 100, need_steps: bool = True) -> TrainResult:
    """Train (or resume, or reload) one model. Digit runs take ``train_data`` (and ``test_data`` for
    the accuracy); patch runs draw from their task, and ``init_body`` loads pretrained weights into
    the fresh model before training. A finished run that was :func:`prune`-d is reloaded with its
    last checkpoint alone when ``need_steps`` is False, and trained again (identically, from its
    seed) when its recorded checkpoints are needed."""
    label = f"train {config.name()}"
    directory = Path(directory) / config.name()
    directory.mkdir(parents=True, exist_ok=True)
    meta_path, steps = directory / "result.json", config.steps()
    paths = {s: ck.checkpoint_path(directory, s) for s in steps}
    final = max(steps)
    if meta_path.exists() and paths[final].exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("config") == asdict(config):
                if all(p.exists() for p in paths.values()) and not ck.discard_corrupt(directory, steps, label):
                    return TrainResult(config, paths, meta["test_accuracy"], meta["seconds"], resumed_from=config.iterations)
                if meta.get("pruned"):
                    if not need_steps and not ck.discard_corrupt(directory, [final], label):
                        return TrainResult(config, {final: paths[final]}, meta["test_accuracy"], meta["seconds"], resumed_from=config.iterations)
                    # the recorded checkpoints are needed again: train again from the start (seeded, so the same run)
                    if progress:
                        print(f"[{label}] its recorded checkpoints were pruned; training it again to measure them", flush=True)
                    for p in list(paths.values()) + [meta_path]:
                        p.unlink(missing_ok=True)
        except (ValueError, KeyError):
            warnings.warn(f"{meta_path} is unreadable; checking the checkpoints one by one")

    run = config._run(training_device(), train_data, test_data, init_body, test_points)
    model, objective, opt, gen = run.model, run.objective, run.optimizer, run.generator

    def snapshot(it: int) -> None:
        ck.save({"model": ck.cpu_state(model), "objective": ck.cpu_state(objective), "optimizer": ck.cpu_state(opt),
                 "generator": gen.get_state(), "rng": ck.rng_states(), "kept": ck.cpu_state(objective.kept(model)), "step": it}, paths[it])
        earlier = [s for s in steps if s < it]
        if earlier and paths[earlier[-1]].exists():
            ck.slim(paths[earlier[-1]])

    start, state = ck.latest(directory, steps)
    result = TrainResult(config, paths)
    if state is not None:
        ck.load_state(model, state["model"])
        if "objective" in state:
            objective.load_state_dict(state["objective"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        ck.restore_rng(state)
        result.resumed_from = start
        if progress:
            print(f"[{label}] resuming from step {start}", flush=True)
    else:
        start = 0
        snapshot(0)
    t0, running, since = time.time(), 0.0, 0
    model.train()
    objective.train()
    for it in range(start + 1, config.iterations + 1):
        x, y = run.sample()
        for group in opt.param_groups:
            group["lr"] = config.lr_at(it)
        opt.zero_grad(set_to_none=True)
        loss = objective.loss(model, x, y, gen)
        loss.backward()
        opt.step()
        objective.after_step(model, it, config.iterations)
        running, since = running + loss.item(), since + 1
        if it in paths:
            snapshot(it)
        if progress and (it % log_every == 0 or it == config.iterations):
            print(f"[{label}] step {it}/{config.iterations} loss {running / since:.3f} "
                  f"(mean of the last {since} steps; {time.time() - t0:.0f} s)", flush=True)
            running, since = 0.0, 0
    kept = objective.kept(model).eval()
    result.test_accuracy = run.evaluate(kept)
    result.seconds = time.time() - t0
    meta_path.write_text(json.dumps({"config": asdict(config), "test_accuracy": result.test_accuracy, "seconds": result.seconds}))
    if progress and not math.isnan(result.test_accuracy):
        print(f"[{label}] test accuracy {result.test_accuracy:.4f}", flush=True)
    return result
