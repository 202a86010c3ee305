"""The claims ledger's page shows what the published claims say: each verdict in its own colour, the
calibration of each claim's own rule in the right column, the counts per chapter and verdict."""
import math

import numpy as np
import pytest

from dataclasses import asdict

from geed.report import calibration, claims as C, ledger


@pytest.fixture
def published(tmp_path):
    """Claims of two chapters, written as a run publishes them: a statistical rule, an exact check, a
    claim not tested, and one whose rule was changed after results (its earlier verdict kept)."""
    rng = np.random.default_rng(0)
    stat = C.compare(1.0 + 0.1 * rng.normal(size=4), 0.1 * rng.normal(size=4), "A", "B")
    exact = C.near_zero([2.0], 1e-9, "an exact value")
    missing = C.not_tested("no <weights> here")
    changed = C.Verdict(C.INCONCLUSIVE, "figures", "a rule", {}, history="holds under the first rule")
    files = {"one": [("1-a", stat, "A is above B"), ("1-b", exact, "x is 0 & nothing else")],
             "two": [("2-a", missing, "a claim"), ("2-b", changed, "another claim")]}
    for chapter, entries in files.items():
        C._write(tmp_path / f"{chapter}.json", {"meta": {"chapter": chapter}, "claims": {
            cid: {"chapter": chapter, "id": cid, "source": "Sec. 1", "claim": text, **asdict(v), "note": "", "key": False}
            for cid, v, text in entries}})
    return tmp_path, {cid: v for es in files.values() for cid, v, _ in es}


def test_the_table_carries_each_rules_own_calibration(published):
    folder, verdicts = published
    table = ledger.table(["two", "one", "absent"], folder, n_sims=400)
    assert list(table["id"]) == ["2-a", "2-b", "1-a", "1-b"]  # in the chapters' order
    assert table.set_index("id")["verdict"].to_dict() == {k: v.verdict for k, v in verdicts.items()}
    row = table.set_index("id").loc["1-a"]
    want = calibration.rates(verdicts["1-a"].spec, effect=ledger.EFFECT, n_sims=400)
    assert [row[c] for c in ledger.RATE_COLUMNS] == pytest.approx([want[c] for c in ledger.RATE_COLUMNS])
    assert 0 <= row["false verdicts"] <= 0.1 < row["power"]  # a rate near the nominal 5%, and a power well above it
    for cid in ("1-b", "2-a", "2-b"):  # exact checks, claims not tested, rules without a simulated spec: no rates
        assert all(math.isnan(table.set_index("id").loc[cid, c]) for c in ledger.RATE_COLUMNS)


def test_the_counts_give_every_verdict_per_chapter_and_in_all(published):
    folder, _ = published
    counts = ledger.counts(C.load_all(["two", "one"], folder), ["two", "one", "absent"])
    assert list(counts.index) == ["two", "one", "all"] and list(counts.columns) == list(C.STATUSES)
    assert counts.loc["two"].to_dict() == {C.HOLDS: 0, C.FAILS: 0, C.INCONCLUSIVE: 1, C.NOT_TESTED: 1}
    assert counts.loc["one"].to_dict() == {C.HOLDS: 1, C.FAILS: 1, C.INCONCLUSIVE: 0, C.NOT_TESTED: 0}
    assert counts.loc["all"].to_dict() == {C.HOLDS: 1, C.FAILS: 1, C.INCONCLUSIVE: 1, C.NOT_TESTED: 1}


def _cells(page: str, claim_id: str) -> list[str]:
    row = page.split(f">{claim_id}</a></td>", 1)[1].split("</tr>", 1)[0]
    return [c.split(">", 1)[1] for c in row.split("</td>")[:-1]]


def test_the_page_shows_each_claim_with_its_verdict_colour_and_its_rates(published):
    folder, verdicts = published
    table = ledger.table(["one", "two"], folder, n_sims=400)
    page = ledger.html_table(table)
    assert ledger.COLOURS[C.HOLDS] != ledger.COLOURS[C.FAILS]
    for cid, v in verdicts.items():
        assert f"<a href='{'one' if cid.startswith('1') else 'two'}.html'>{cid}</a>" in page
        verdict_cell = page.split(f">{cid}</a></td>", 1)[1].split("</td>", 1)[0]
        assert verdict_cell == f"<td style='color:{ledger.COLOURS[v.verdict]};font-weight:bold'>{v.verdict}"
    rates = table.set_index("id").loc["1-a"]
    cells = _cells(page, "1-a")
    assert cells[-3:] == [f"{rates['false verdicts']:.1%}", f"{rates['power']:.1%}", f"{rates['80% power at (SD)']:g} SD"]
    assert _cells(page, "1-b")[-3:] == ["", "", ""]
    assert "x is 0 &amp; nothing else" in page and "no &lt;weights&gt; here" in page  # the page's own text is escaped
    assert "<b>Earlier rule:</b> holds under the first rule" in page and page.count("Earlier rule") == 1
    assert f"<th>power at {ledger.EFFECT:g} SD</th>" in page


def test_a_detectable_effect_of_never_is_said_so():
    assert ledger._sd(float("inf")) == "never" and ledger._sd(1.5) == "1.5 SD" and ledger._sd(float("nan")) == ""


def test_holds_is_shown_in_green_and_does_not_hold_in_red():
    def rgb(colour):
        return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))

    r, g, b = rgb(ledger.COLOURS[C.HOLDS])
    assert g > r and g > b
    r, g, b = rgb(ledger.COLOURS[C.FAILS])
    assert r > g and r > b
    assert len(set(ledger.COLOURS.values())) == len(C.STATUSES) == len(ledger.COLOURS)
