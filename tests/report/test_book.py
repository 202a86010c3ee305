"""The build driver: profiles, parameters, failing chapters never published, tagging, offline vega."""
from pathlib import Path

import nbformat
import pytest

from geed.report import book

ROOT = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, cells: list[str]) -> Path:
    """A minimal project with one chapter 'demo' made of ``cells`` (the first is the parameters cell)."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "profiles").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/chapters/demo\n")
    (tmp_path / "profiles" / "smoke.yml").write_text("demo:\n  n: 3\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(cells[0])
    first.metadata["tags"] = ["parameters"]
    start = "from geed.report import Chapter\nchapter = Chapter('demo', profile)"
    nb.cells = [first, nbformat.v4.new_code_cell(start)] + [nbformat.v4.new_code_cell(c) for c in cells[1:]]
    nbformat.write(nb, tmp_path / "notebooks" / "demo.ipynb")
    return tmp_path


def test_chapters_and_profiles_of_this_project():
    names = book.chapters(ROOT)
    assert names[0] == "section3" and names[-1] == "ledger"
    for profile in book.PROFILES:
        prof = book.load_profile(profile, ROOT)
        assert set(prof) <= set(names)
    with pytest.raises(book.BuildError, match="unknown profile"):
        book.load_profile("huge", ROOT)


def test_unknown_parameter_and_chapter_are_refused(tmp_path):
    root = _project(tmp_path, ["profile = 'x'\nn = 1", "print(n)"])
    with pytest.raises(book.BuildError, match="no such parameter"):
        book.execute_chapter("demo", "smoke", {"m": 2}, root=root)
    with pytest.raises(book.BuildError, match="unknown chapter"):
        book.execute_chapter("nope", "smoke", root=root)


@pytest.mark.slow
def test_failing_chapter_is_not_published(tmp_path, monkeypatch):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path / "build"))
    root = _project(tmp_path, ["profile = 'x'\nn = 1", "raise RuntimeError('boom at n=%d' % n)"])
    with pytest.raises(book.BuildError, match="boom at n=3"):
        book.execute_chapter("demo", "smoke", root=root)
    assert not (root / "book" / "chapters" / "demo.ipynb").exists()
    assert (tmp_path / "build" / "failed" / "demo.ipynb").exists()


@pytest.mark.slow
def test_a_chapter_that_never_records_its_run_is_not_published(tmp_path, monkeypatch):
    """A notebook that runs without error but never starts its ``Chapter`` has no claims to publish with
    its page: it fails with that reason, and neither a page nor a half-written page is left."""
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path / "build"))
    root = _project(tmp_path, ["profile = 'x'\nn = 1", "print(n)"])
    nb = nbformat.read(root / "notebooks" / "demo.ipynb", as_version=4)
    nb.cells[1].source = "pass  # no Chapter"
    nbformat.write(nb, root / "notebooks" / "demo.ipynb")
    with pytest.raises(book.BuildError, match="never recorded its run"):
        book.execute_chapter("demo", "smoke", root=root)
    chapters = root / "book" / "chapters"
    assert not chapters.exists() or not any(chapters.iterdir())


@pytest.mark.slow
def test_successful_chapter_is_published_with_parameter_cells_hidden(tmp_path, monkeypatch):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path / "build"))
    root = _project(tmp_path, ["profile = 'x'\nn = 1", "print('n is', n)"])
    out = book.execute_chapter("demo", "smoke", {"n": 7}, root=root)
    nb = nbformat.read(out, as_version=4)
    tagged = [c for c in nb.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert len(tagged) == 2  # papermill's original and injected parameter cells
    assert "n is 7" in "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_vega_bundle_is_local_and_declares_versions(tmp_path):
    path = book.write_vega_bundle(tmp_path)
    head = path.read_text()[:300]
    assert head.startswith("window.VEGA_DEBUG = {") and '"vega_version"' in head and '"vegalite_version"' in head
    assert "cdn.jsdelivr" not in head


def test_readme_example_runs_as_written():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Using `geed` on your own model", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(block, "README example", "exec"), scope)
    summary = scope["report"].summary()
    assert {"channelwise", "latent_l2", "latent_cosine", "softmax", "DI", "LI"} <= set(summary["metric"])
    assert summary["value"].notna().all()


def test_readme_registry_example_runs_as_written():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Using `geed` on your own model", 1)[1].split("```python")[2].split("```", 1)[0]
    assert "create_model(" in block and "list_models(" in block
    scope: dict = {}
    exec(compile(block, "README registry example", "exec"), scope)
    assert {"latent_l2", "latent_cosine"} <= set(scope["flip"].summary()["metric"])


def test_every_profile_parameter_exists_in_its_chapter():
    for profile in book.PROFILES:
        for chapter, params in book.load_profile(profile, ROOT).items():
            known = book._notebook_parameters(ROOT / "notebooks" / f"{chapter}.ipynb")
            assert set(params) <= known, (profile, chapter, set(params) - known)


# Every setting of the paper's protocol that the paper states, with where it states it (Kvinge et al.
# 2022; the text is in ../shared/reference). The `paper` profile is this protocol: a value changed there
# would make the book say it follows the paper while it does not.
PAPERS_PROTOCOL = {
    ("section41", "n_points"): (50, "Sec. 4: G-EED over 50 randomly chosen examples"),
    ("section41", "n_reference"): (200, "Sec. 4: M over 200 randomly chosen points"),
    ("section41", "n_models"): (10, "Sec. 4.1: 10 copies of each model type"),
    ("section41", "iterations"): (2000, "Sec. 4.1: trained for 2,000 iterations"),
    ("section41", "width"): (1.0, "Sec. 4.1: the C8-CNN of [45] (e2cnn's example widths)"),
    ("section41", "group"): ("C8", "Sec. 4.1: C8-EED"),
    ("section42", "n_points"): (50, "Sec. 4: G-EED over 50 randomly chosen examples"),
    ("section42", "n_reference"): (200, "Sec. 4: M over 200 randomly chosen points"),
    ("section42", "n_models"): (10, "Fig. 3: intervals over 10 randomly initialised models"),
    ("section42", "group"): ("C8", "Sec. 4.2: C8-EED"),
    ("section43", "archs"): (["resnet50", "alexnet", "densenet121", "levit_192"], "Sec. 4.3: the four architectures"),
    ("section43", "n_models"): (5, "Sec. 4.3: five models from scratch and five pretrained"),
    ("section43", "iterations"): (10000, "Fig. 4: 10,000 iterations in all"),
    ("section43", "record_every"): (200, "Fig. 4: measured every 200 training iterations"),
    ("section43", "weights_source"): ("auto", "Sec. 4.3: torchvision's and timm's published weights (used wherever they are on disk)"),
    ("section43", "n_points"): (50, "Sec. 4: G-EED over 50 randomly chosen examples"),
    ("section43", "n_reference"): (200, "Sec. 4: M over 200 randomly chosen points"),
    ("section44", "n_points"): (100, "Fig. 5: intervals over 100 random inputs"),
    ("section44", "include_published"): (True, "Sec. 4.4: the published ResNet50, BiT, DINO and SimCLR weights"),
}


def test_the_paper_profile_is_the_papers_protocol_wherever_the_paper_states_it():
    """Each setting the paper states is the `paper` profile's effective value (the profile over the
    notebook's own default), so a run of that profile is the paper's protocol where the paper says
    what it was."""
    profile = book.load_profile("paper", ROOT)
    effective = {chapter: {**book._notebook_defaults(ROOT / "notebooks" / f"{chapter}.ipynb"), **profile.get(chapter, {})}
                 for chapter in {chapter for chapter, _ in PAPERS_PROTOCOL}}
    for (chapter, name), (value, where) in PAPERS_PROTOCOL.items():
        got = effective[chapter][name]
        assert got == value, f"paper profile, {chapter}.{name} = {got!r}; the paper's is {value!r} ({where})"
