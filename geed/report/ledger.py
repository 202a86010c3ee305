"""The claims ledger's page: every published claim with its verdict, the calibration of its rule, and
the verdict counts per chapter. The ledger notebook only calls these, so that what the page shows is
tested like the rest of the library."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from geed.report import calibration, claims

__all__ = ["COLOURS", "RATE_COLUMNS", "table", "counts", "html_table"]

COLOURS = {claims.HOLDS: "#1a7f37", claims.FAILS: "#cf222e", claims.INCONCLUSIVE: "#9a6700", claims.NOT_TESTED: "#57606a"}
RATE_COLUMNS = ("false verdicts", "power", "80% power at (SD)")
EFFECT = 2.0  # the effect, in standard deviations, at which the page gives each rule's power


def table(chapters: Sequence[str], directory: Path | None = None, n_sims: int = 4000) -> pd.DataFrame:
    """The published claims of ``chapters`` (in that order) with each rule's simulated false-verdict
    rate, its power at :data:`EFFECT` SD and the effect it detects with 80% power (NaN for
    deterministic checks and claims not tested)."""
    ledger = claims.load_all(list(chapters), directory)
    rates = [calibration.rates(spec if isinstance(spec, dict) else {}, effect=EFFECT, n_sims=n_sims) for spec in ledger["spec"]]
    for col in RATE_COLUMNS:
        ledger[col] = [r[col] for r in rates]
    return ledger


def counts(ledger: pd.DataFrame, chapters: Sequence[str]) -> pd.DataFrame:
    """Claims per chapter (rows, in ``chapters`` order, those with claims) and verdict (columns, every
    verdict, zero where none), with a last row ``all``."""
    out = pd.DataFrame(0, index=[c for c in chapters if c in set(ledger["chapter"])], columns=list(claims.STATUSES), dtype=int)
    for (chapter, verdict), n in ledger.groupby(["chapter", "verdict"]).size().items():
        if chapter in out.index:
            out.loc[chapter, verdict] = int(n)
    out.loc["all"] = out.sum()
    out.index.name, out.columns.name = "chapter", "verdict"
    return out


def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def _sd(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return "never" if math.isinf(x) else f"{x:g} SD"


def html_table(ledger: pd.DataFrame) -> str:
    """One row per claim: its id (a link to its chapter), the verdict in its colour, the statement with
    its details (source, figures, rule, an earlier rule's verdict, a note) and the rule's calibration."""
    rows = []
    for r in ledger.to_dict("records"):
        details = (f"<details><summary>details</summary><p><b>Source:</b> {html.escape(r['source'])}</p>"
                   f"<p><b>Measured:</b> {html.escape(r['figures'])}</p><p><b>Rule:</b> {html.escape(r['rule'])}</p>"
                   + (f"<p><b>Earlier rule:</b> {html.escape(r['history'])}</p>" if r["history"] else "")
                   + (f"<p><b>Note:</b> {html.escape(r['note'])}</p>" if r["note"] else "") + "</details>")
        rows.append(
            f"<tr><td><a href='{html.escape(r['chapter'])}.html'>{html.escape(r['id'])}</a></td>"
            f"<td style='color:{COLOURS[r['verdict']]};font-weight:bold'>{html.escape(r['verdict'])}</td>"
            f"<td>{html.escape(r['claim'])}{details}</td>"
            f"<td>{_pct(r['false verdicts'])}</td><td>{_pct(r['power'])}</td><td>{_sd(r['80% power at (SD)'])}</td></tr>")
    return ("<table class='ledger'><thead><tr><th>claim</th><th>verdict</th><th>statement</th><th>false verdicts</th>"
            f"<th>power at {EFFECT:g} SD</th><th>80% power at</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
