"""Checkpoint files of a training run: written atomically, checked for corruption without
unpickling, slimmed to what measuring needs once a newer checkpoint holds the training state."""
from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["checkpoint_path", "save", "intact", "discard_corrupt", "read_checkpoint", "latest", "slim",
           "cpu_state", "load_state", "rng_states", "restore_rng", "kept_state"]

# what an earlier recorded checkpoint keeps: the measured model and its step (see ``slim``)
MEASURED = frozenset({"kept", "step"})


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step{step:06d}.pt"


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


def kept_state(state: dict) -> dict:
    """The measured model's weights in a checkpoint (files written before ``kept`` existed hold ``model``)."""
    return state["kept"] if "kept" in state else state["model"]


def save(state: dict, path: Path) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def intact(path: Path) -> bool:
    """Whether a checkpoint file is whole: torch saves a zip archive, whose CRCs are checked here
    without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def discard_corrupt(directory: Path, steps: list[int], label: str) -> bool:
    """Check the checkpoints of a finished run. If one is corrupt, name it, delete it, every later
    checkpoint and the run's summary (so the run resumes from the last good checkpoint and rewrites
    them identically); returns whether anything was discarded."""
    bad = [s for s in steps if not intact(checkpoint_path(directory, s))]
    if not bad:
        return False
    first = min(bad)
    message = (f"[{label}] corrupt checkpoint(s) {[checkpoint_path(directory, s).name for s in bad]} in {directory}; "
               f"retraining from step {first} on (from the newest earlier checkpoint that holds the training state, else from the start; seeded, so identically)")
    warnings.warn(message)
    print(message, flush=True)
    for s in steps:
        if s >= first:
            checkpoint_path(directory, s).unlink(missing_ok=True)
    (directory / "result.json").unlink(missing_ok=True)
    return True


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, or one error naming the file when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise RuntimeError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); delete it and re-run to retrain it") from exc


def rng_states() -> dict:
    """Torch's global random states (dropout, random init inside the model), CUDA's included where
    present, saved with the training state."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict) -> None:
    rng = state.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def latest(directory: Path, steps: list[int]) -> tuple[int, dict | None]:
    """The newest checkpoint that holds the training state, as ``(step, state)``; ``(-1, None)`` when
    training must start over (no checkpoint, or the newest holds the measured model alone)."""
    for step in sorted(steps, reverse=True):
        p = checkpoint_path(directory, step)
        if p.exists():
            try:
                state = torch.load(p, map_location="cpu", weights_only=False)
            except Exception as exc:
                warnings.warn(f"checkpoint {p} is unreadable ({type(exc).__name__}); ignoring it and resuming from an earlier one")
                p.unlink(missing_ok=True)
                continue
            if "optimizer" not in state:
                return -1, None
            return step, state
    return -1, None


def slim(path: Path) -> None:
    """Reduce a checkpoint to what measuring needs (the kept model and its step), if not done yet."""
    try:
        state = read_checkpoint(path)
    except RuntimeError:
        return  # an unreadable checkpoint is found and retrained when the run is reused
    if set(state) <= MEASURED:
        return
    save({"kept": kept_state(state), "step": state["step"]}, path)
