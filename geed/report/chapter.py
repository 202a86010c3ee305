"""What a chapter notebook uses: :class:`Chapter` starts the chapter's run (its claims are staged
until the book driver publishes them with the page), records claims and shows provenance."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from typing import Any

from geed.report import claims, paths
from geed.report.cache import code_version

__all__ = ["Chapter", "git_commit"]


class Chapter:
    """Used by a chapter notebook: starts its claims, times it, records claims, shows provenance."""

    def __init__(self, name: str, profile: str = "default", **params: Any) -> None:
        import pandas as pd

        pd.set_option("display.max_colwidth", None)  # a page never cuts a value short
        self.name, self.profile, self.params = name, profile, params
        self.started = time.time()
        claims.start(name, {"profile": profile, "params": params, "code_version": code_version(), "commit": git_commit()})

    def claim(self, claim_id: str, source: str, claim: str, verdict: claims.Verdict, note: str = "", key: bool = False) -> None:
        """Record a claim; ``key=True`` marks the chapter's headline claim for the front page."""
        claims.record(self.name, claim_id, source, claim, verdict, note, key=key)

    def note(self, key: str, value: Any) -> None:
        """Keep an item with this run's claims (e.g. which chapter runs the ledger summarised)."""
        claims.annotate(self.name, key, value)

    def table(self, columns: list[str] | None = None):
        """This run's claims of the chapter (staged until the run is published)."""
        df = claims.load_all([self.name], paths.staging_claims_dir())
        return df[columns] if columns else df

    def provenance(self):
        import pandas as pd
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
        claims.annotate(self.name, "seconds", round(time.time() - self.started, 1))
        claims.annotate(self.name, "device", device)
        rows = [("profile", self.profile)]
        rows += [(f"parameter {k}", json.dumps(v, default=str)) for k, v in self.params.items()]
        rows += [
            ("run id", os.environ.get("GEED_RUN_ID", "not run by the book driver")),
            ("device", device),
            ("code version (hash of geed/)", code_version()),
            ("git commit", git_commit()),
            ("torch", torch.__version__),
            ("python", platform.python_version()),
            ("time taken", f"{time.time() - self.started:.1f} s"),
        ]
        return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.root(), capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
