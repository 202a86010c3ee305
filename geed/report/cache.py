"""Results cached by a key of everything that determines them.

The key hashes the entry's name, its parameters, a fingerprint of its data and the code version
(a hash of the ``geed`` sources). Each file starts with the SHA-256 of its payload: a file that
does not match (truncated, edited, half-written) is reported, removed and recomputed -- never used.
Writes go to a temporary file first and are renamed into place, so an interrupted run leaves
either the old entry or none.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from geed.report import paths

__all__ = ["ResultCache", "code_version", "fingerprint", "CacheCorruptionWarning"]


class CacheCorruptionWarning(UserWarning):
    """A cache entry failed its checksum and was discarded."""


PACKAGE = Path(__file__).resolve().parents[1]  # geed/, above this file's geed/report/


def source_hash(pkg: Path = PACKAGE) -> str:
    """Short hash of every Python source under ``pkg``: paths and contents, in a fixed order."""
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py"), key=lambda f: f.relative_to(pkg).as_posix()):
        h.update(f.relative_to(pkg).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Short hash of the ``geed`` package sources (measures, models, data, experiments and report; the
    same in every clone of the same code): a change anywhere in the package gives every cached result
    a new key."""
    return source_hash(PACKAGE)


def fingerprint(obj: Any) -> str:
    """Stable hash of parameters, arrays or tensors (for keys)."""
    h = hashlib.sha256()

    def feed(o: Any) -> None:
        if hasattr(o, "detach") and hasattr(o, "cpu"):
            o = o.detach().cpu().numpy()
        if hasattr(o, "tobytes") and hasattr(o, "dtype"):
            h.update(str((o.shape, str(o.dtype))).encode())
            h.update(o.tobytes())
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                h.update(str(k).encode())
                feed(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(b"[")
            for v in o:
                feed(v)
            h.update(b"]")
        else:
            h.update(json.dumps(o, sort_keys=True, default=str).encode())

    feed(obj)
    return h.hexdigest()[:16]


class ResultCache:
    """A folder of checksummed pickles addressed by key."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else paths.cache_dir()

    def key(self, name: str, params: dict, data: Any = None) -> str:
        return f"{name}-{fingerprint({'params': params, 'data': data, 'code': code_version()})}"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pkl"

    def load(self, key: str) -> Any | None:
        p = self.path(key)
        if not p.exists():
            return None
        raw = p.read_bytes()
        digest, _, payload = raw.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            warnings.warn(f"cache entry {p} is corrupt (checksum mismatch); recomputing it", CacheCorruptionWarning, stacklevel=2)
            p.unlink(missing_ok=True)
            return None
        try:
            return pickle.loads(payload)
        except Exception as exc:  # a valid checksum over an unreadable pickle: written by other code
            warnings.warn(f"cache entry {p} cannot be read ({exc}); recomputing it", CacheCorruptionWarning, stacklevel=2)
            p.unlink(missing_ok=True)
            return None

    def save(self, key: str, value: Any) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        pickle.dump(value, buf, protocol=pickle.HIGHEST_PROTOCOL)
        payload = buf.getvalue()
        p = self.path(key)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
        os.replace(tmp, p)
        return p

    def get_or_compute(self, name: str, params: dict, compute: Callable[[], Any], data: Any = None) -> tuple[Any, bool]:
        """Return ``(value, from_cache)``."""
        key = self.key(name, params, data)
        hit = self.load(key)
        if hit is not None:
            return hit, True
        value = compute()
        self.save(key, value)
        return value, False
