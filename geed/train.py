"""Seeded, resumable training on rotated digits, with checkpoints at fixed iteration steps.

``train(config, train_data, test_data, directory)`` trains one model with random-rotation
augmentation (Adam, cross-entropy) and saves a checkpoint at every step in ``config.steps()``
(0, every ``checkpoint_every`` iterations, and the last). Each checkpoint holds the model, the
optimiser and the random-number state, and is written atomically; an interrupted run resumes from
the last readable checkpoint (an unreadable one is reported and skipped). Progress is printed.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .data import DigitData, random_rotation
from .groups import get_group
from .models import ARCHITECTURE_REVISION, build_model
from .saliency import logit_invariance_penalty

__all__ = ["TrainConfig", "TrainResult", "train", "accuracy", "accuracy_of", "load_checkpoint", "training_device"]


def training_device() -> torch.device:
    """Where models are trained: ``$GEED_DEVICE`` when set, else CUDA when available, else the CPU.
    Batches are drawn and augmented on the CPU (seeded generators), then moved; checkpoints are
    saved from the CPU, so they load anywhere."""
    name = os.environ.get("GEED_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"GEED_DEVICE={name!r} is not a device torch knows ({exc})") from None


def cpu_state(module) -> dict:
    """A module's state dict (or an optimiser's) with every tensor on the CPU."""
    def to_cpu(v):
        if isinstance(v, torch.Tensor):
            return v.detach().cpu()
        if isinstance(v, dict):
            return {k: to_cpu(x) for k, x in v.items()}
        if isinstance(v, list):
            return [to_cpu(x) for x in v]
        return v

    return to_cpu(module.state_dict())


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
        s = list(range(0, self.iterations, self.checkpoint_every)) + [self.iterations]
        return sorted(set(s))

    def name(self) -> str:
        rev = ARCHITECTURE_REVISION.get(self.family, 1)
        return (f"{self.family}{f'.r{rev}' if rev > 1 else ''}-w{self.width:g}-s{self.seed}-it{self.iterations}-b{self.batch_size}-lr{self.lr:g}"
                f"-{self.schedule}-wd{self.weight_decay:g}-aug{int(self.augment)}"
                + (f"-inv{self.invariance_weight:g}{self.invariance_group}" if self.invariance_weight else ""))


@dataclass
class TrainResult:
    config: TrainConfig
    checkpoints: dict[int, Path] = field(default_factory=dict)
    test_accuracy: float = float("nan")
    seconds: float = 0.0
    resumed_from: int = 0

    def model(self, step: int | None = None) -> nn.Module:
        step = max(self.checkpoints) if step is None else step
        return load_checkpoint(self.config, self.checkpoints[step])


def load_checkpoint(config: TrainConfig, path: Path) -> nn.Module:
    model = build_model(config.family, width=config.width, seed=config.seed)
    state = read_checkpoint(path)
    load_state(model, state["model"])
    return model.eval()


# e2cnn caches expanded filters as buffers in eval mode only; they are derived, never learned
_DERIVED = (".filter", ".expanded_bias")


def load_state(model: nn.Module, state: dict) -> None:
    """``load_state_dict`` that ignores e2cnn's derived filter caches (present or not) and nothing else."""
    model.train()
    state = {k: v for k, v in state.items() if not k.endswith(_DERIVED)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(_DERIVED)]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {list(unexpected)[:5]}")


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


def _save(state: dict, path: Path) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _intact(path: Path) -> bool:
    """Whether a checkpoint file is whole: torch saves a zip archive, whose CRCs are checked here
    without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def _discard_corrupt(directory: Path, steps: list[int], label: str) -> bool:
    """Check the checkpoints of a finished run. If one is corrupt, name it, delete it, every later
    checkpoint and the run's summary (so the run resumes from the last good checkpoint and rewrites
    them identically); returns whether anything was discarded."""
    bad = [s for s in steps if not _intact(directory / f"step{s:06d}.pt")]
    if not bad:
        return False
    first = min(bad)
    message = (f"[{label}] corrupt checkpoint(s) {[f'step{s:06d}.pt' for s in bad]} in {directory}; "
               f"retraining from the last good checkpoint before step {first}")
    warnings.warn(message)
    print(message, flush=True)
    for s in steps:
        if s >= first:
            (directory / f"step{s:06d}.pt").unlink(missing_ok=True)
    (directory / "result.json").unlink(missing_ok=True)
    return True


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, or one error naming the file when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise RuntimeError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); delete it and re-run to retrain it") from exc


def rng_states() -> dict:
    """Torch's global random state (dropout, random init inside the model), saved with each checkpoint."""
    return {"torch": torch.get_rng_state()}


def restore_rng(state: dict) -> None:
    if "rng" in state:
        torch.set_rng_state(state["rng"]["torch"])


def _latest(directory: Path, steps: list[int]) -> tuple[int, dict | None]:
    for step in sorted(steps, reverse=True):
        p = directory / f"step{step:06d}.pt"
        if p.exists():
            try:
                state = torch.load(p, map_location="cpu", weights_only=False)
            except Exception as exc:
                warnings.warn(f"checkpoint {p} is unreadable ({type(exc).__name__}); ignoring it and resuming from an earlier one")
                p.unlink(missing_ok=True)
                continue
            if "optimizer" not in state:  # a measurement-only checkpoint: training cannot resume from it
                return -1, None
            return step, state
    return -1, None


def train(config: TrainConfig, train_data: DigitData, test_data: DigitData | None, directory: str | os.PathLike,
          progress: bool = True, log_every: int = 100) -> TrainResult:
    """Train (or resume, or simply reload) one model; returns its checkpoints and test accuracy."""
    if len(train_data) == 0:
        raise ValueError("no training data")
    directory = Path(directory) / config.name()
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "result.json"
    steps = config.steps()
    result = TrainResult(config)
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            paths = {s: directory / f"step{s:06d}.pt" for s in steps}
            if (meta.get("config") == asdict(config) and all(p.exists() for p in paths.values())
                    and not _discard_corrupt(directory, steps, f"train {config.name()}")):
                result.checkpoints, result.test_accuracy, result.seconds = paths, meta["test_accuracy"], meta["seconds"]
                result.resumed_from = config.iterations
                return result
        except (ValueError, KeyError):
            warnings.warn(f"{meta_path} is unreadable; retraining what is missing")

    torch.manual_seed(config.seed)
    device = training_device()
    model = build_model(config.family, width=config.width, seed=config.seed).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(10_000 + config.seed)
    start, state = _latest(directory, steps)
    if state is not None:
        load_state(model, state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        restore_rng(state)
        result.resumed_from = start
        if progress:
            print(f"[train {config.name()}] resuming from step {start}", flush=True)
    else:
        start = 0
        _save({"model": cpu_state(model), "optimizer": cpu_state(opt), "generator": gen.get_state(), "rng": rng_states(), "step": 0}, directory / "step000000.pt")
    loss_fn = nn.CrossEntropyLoss()
    inv_group = get_group(config.invariance_group, mask=True)
    t0, running, since = time.time(), 0.0, 0
    model.train()
    for it in range(start + 1, config.iterations + 1):
        idx = torch.randint(0, len(train_data), (config.batch_size,), generator=gen)
        xb, yb = train_data.x[idx], train_data.y[idx]
        if config.augment:
            xb = random_rotation(xb, gen)
        xb, yb = xb.to(device), yb.to(device)
        for group in opt.param_groups:
            group["lr"] = config.lr_at(it)
        opt.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        if config.invariance_weight:
            loss = loss + config.invariance_weight * logit_invariance_penalty(model, xb, logits, inv_group, gen)
        loss.backward()
        opt.step()
        running, since = running + loss.item(), since + 1
        if it in steps:
            _save({"model": cpu_state(model), "optimizer": cpu_state(opt), "generator": gen.get_state(), "rng": rng_states(), "step": it},
                  directory / f"step{it:06d}.pt")
        if progress and (it % log_every == 0 or it == config.iterations):
            print(f"[train {config.name()}] step {it}/{config.iterations} loss {running / since:.3f} "
                  f"(mean of the last {since} steps; {time.time() - t0:.0f} s)", flush=True)
            running, since = 0.0, 0
    model.eval()
    result.checkpoints = {s: directory / f"step{s:06d}.pt" for s in steps}
    result.test_accuracy = accuracy(model, test_data) if test_data is not None else float("nan")
    result.seconds = time.time() - t0
    meta_path.write_text(json.dumps({"config": asdict(config), "test_accuracy": result.test_accuracy, "seconds": result.seconds}))
    if progress:
        print(f"[train {config.name()}] test accuracy {result.test_accuracy:.4f}", flush=True)
    return result
