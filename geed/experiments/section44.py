"""Section 4.4: one backbone trained supervised, SimCLR-style and DINO-style, measured under the mirror.

``run(params)`` trains ``n_models`` models per objective from the same start (EfficientNet-Lite's
ImageNet weights by default), adds the starting point and any published model on disk, and measures
latent flip-EED; ``claims(tables)`` gives the verdicts (rules in :func:`geed.experiments.selfsup.claims_44`).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from geed.experiments import selfsup as S

__all__ = ["run", "claims", "EarlierProtocol", "earlier_protocol", "recorded_protocol", "protocol_comparison", "RECORDS"]

RECORDS = Path(__file__).resolve().parent / "records"
EARLIER_RECORD = "section44-default-150-iterations"  # the default protocol before its training budget was cut


@dataclass
class EarlierProtocol:
    """A measured table of an earlier protocol, kept with its provenance, whose verdicts the chapter
    shows beside its own because the protocol changed after those verdicts were seen."""

    table: pd.DataFrame
    meta: dict
    changed: dict  # parameter -> (earlier value, this run's value)

    @cached_property
    def verdicts(self) -> dict:
        """claim id -> verdict on the recorded table, by the rules of :func:`geed.experiments.selfsup.claims_44`."""
        return {cid: v for cid, _, _, v in S.claims_44(self.table)}

    def label(self) -> str:
        was = self.changed["iterations"][0]
        return (f"at {was} training iterations per model, the default protocol's budget before it was changed after these "
                f"verdicts had been seen (measured {self.meta['measured']}, commit {self.meta['commit'][:7]})")


def recorded_protocol(records: Path | None = None) -> dict | None:
    """The provenance of the recorded earlier protocol (its parameters, command, commit, date), or None."""
    meta_path = (RECORDS if records is None else Path(records)) / f"{EARLIER_RECORD}.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        meta["parameters"], meta["file"]  # noqa: B018 - both must be there
    except (ValueError, KeyError) as exc:
        raise ValueError(f"the record {meta_path} is unreadable ({exc}); restore it from the repository") from None
    return meta


def earlier_protocol(params: dict, records: Path | None = None) -> EarlierProtocol | None:
    """The recorded earlier protocol that this run's parameters differ from in ``iterations`` alone,
    or None when there is none (any other profile or parameter choice). A record whose table does not
    match its checksum is an error, raised before any work."""
    folder = RECORDS if records is None else Path(records)
    meta = recorded_protocol(folder)
    if meta is None:
        return None
    earlier, table_path = meta["parameters"], folder / meta["file"]
    same = all(params.get(k) == v for k, v in earlier.items() if k != "iterations")
    if not same or params.get("iterations") == earlier["iterations"]:
        return None
    raw = table_path.read_bytes() if table_path.exists() else b""
    if hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
        raise ValueError(f"the record {table_path} is missing or does not match its checksum in {EARLIER_RECORD}.json; "
                         "restore both files from the repository")
    table = pd.read_csv(io.BytesIO(raw))
    return EarlierProtocol(table, meta, {"iterations": (earlier["iterations"], params.get("iterations"))})


def run(params: dict, cache=None, progress: bool = True) -> dict:
    """Tables of the chapter: ``table`` (per-sample latent flip-EED of every model), ``results``,
    ``published_status`` (the models measured beside the trained ones, and where they come from)."""
    p = params
    seeds = list(range(p["seed"], p["seed"] + p["n_models"]))
    results = S.train_models(p["arch"], seeds, p["iterations"], p["batch_size"], p["lr"], progress=progress, init=p["init"], size=p["size"],
                             weights_dir=p["weights_dir"])
    published, status = S.published_models(p["weights_dir"]) if p["include_published"] else ({}, {})
    if p["init"] == "imagenet":  # the starting point itself: the ImageNet-supervised model, before any training here
        label, model = S.imagenet_model(p["arch"], p["weights_dir"])
        published, status = {label: model, **published}, {label: "the starting point of every objective", **status}
    key = dict(configs=[r.config.name() for rs in results.values() for r in rs], published=sorted(status.items()),
               size=p["size"], n_points=p["n_points"], n_reference=p["n_reference"], seed=p["seed"])
    compute = lambda: S.measure({**{k: [r.model() for r in rs] for k, rs in results.items()}, **{k: [m] for k, m in published.items()}},  # noqa: E731
                                p["n_points"], p["n_reference"], p["seed"], p["size"])
    table, cached = cache.get_or_compute("section44-flip", key, compute) if cache is not None else (compute(), False)
    return {"results": results, "published_status": status, "table": table, "table_cached": cached}


def claims(tables: dict, earlier: EarlierProtocol | None = None) -> list[tuple]:
    """``(id, source, claim, verdict, key)`` for every claim of Section 4.4; 4.4-1 is the headline.
    With an ``earlier`` protocol, each verdict's history also gives the verdict, by the same rules,
    on the earlier protocol's recorded table."""
    before = earlier.verdicts if earlier is not None else {}
    out = []
    for cid, src, text, verdict in S.claims_44(tables["table"]):
        if cid in before:
            note = f"{earlier.label()}: {before[cid].verdict} ({before[cid].figures})"
            verdict.history = f"{verdict.history}; {note}" if verdict.history else note
        out.append((cid, src, text, verdict, cid == "4.4-1"))
    return out


def protocol_comparison(tables: dict, earlier: EarlierProtocol) -> pd.DataFrame:
    """Each claim's verdict and figures in this run and on the earlier protocol's table, side by side
    (both by the rules of :func:`geed.experiments.selfsup.claims_44`)."""
    now = {cid: v for cid, _, _, v in S.claims_44(tables["table"])}
    was, is_ = earlier.changed["iterations"]
    rows = []
    for cid, v in earlier.verdicts.items():
        mine = now.get(cid)
        rows.append({"claim": cid, f"this run ({is_} iterations)": mine.verdict if mine else "-",
                     f"earlier protocol ({was} iterations)": v.verdict,
                     "figures, this run": mine.figures if mine else "-", "figures, earlier protocol": v.figures})
    return pd.DataFrame(rows)
