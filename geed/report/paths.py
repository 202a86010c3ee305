"""Where the project keeps its outputs. Everything is relative to the project root, which is
``$GEED_ROOT`` when set (the book driver sets it) and the current directory otherwise."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["root", "build_dir", "cache_dir", "claims_dir", "staging_claims_dir"]


def root() -> Path:
    return Path(os.environ.get("GEED_ROOT", os.getcwd())).resolve()


def build_dir() -> Path:
    return Path(os.environ.get("GEED_BUILD_DIR", root() / "build"))


def cache_dir() -> Path:
    return Path(os.environ.get("GEED_CACHE_DIR", root() / ".cache" / "results"))


def claims_dir() -> Path:
    return build_dir() / "claims"


def staging_claims_dir() -> Path:
    """Where a running chapter records its claims: the book driver's folder for this run
    (``GEED_CLAIMS_STAGING``), else a scratch folder that the book never publishes."""
    return Path(os.environ.get("GEED_CLAIMS_STAGING", build_dir() / "claims-scratch"))
