"""Build the book: execute chapter notebooks with papermill under a profile, then compile with Jupyter Book.

Usage (from the project root)::

    python -m geed.report build --profile default      # every chapter, then the HTML
    python -m geed.report run section3 --profile smoke -p n_points 8   # one chapter, no rebuild of others
    python -m geed.report html                         # compile what has been executed

Chapters are the ``book/chapters/<name>`` entries of ``_toc.yml``; their sources are
``notebooks/<name>.ipynb``; a profile (``profiles/<name>.yml``) gives each chapter's parameters.
A chapter that fails (papermill error, or an error output in the executed notebook) stops the
build; its notebook goes to ``build/failed/`` and is never published. Parameters are checked for
type and range (:mod:`geed.report.parameters`) before any chapter runs. A chapter's claims are staged
while it runs and published together with its page, both stamped with the same run id, profile and
code version; the HTML build refuses a page whose claims come from another run, marks chapters that
were never executed, re-executes the ledger when it is older than the claims, and writes the front
page's results at a glance. Parameter cells are tagged ``remove-cell`` so the pages show results,
not papermill's plumbing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geed.report import claims, parameters, paths
from geed.report.cache import code_version
from geed.report.ledger import counts as verdict_counts

__all__ = ["chapters", "load_profile", "execute_chapter", "build", "main"]

PROFILES = ("smoke", "default", "paper")


class BuildError(RuntimeError):
    pass


class _Flushing:
    """A stream that flushes after every write, so chapter progress reaches the build log live."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        self.stream.flush()
        return n

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        self.stream.flush()


# ----------------------------------------------------------------------------- the driver
def chapters(root: Path | None = None) -> list[str]:
    """Chapter names in book order, read from ``_toc.yml``."""
    root = root or paths.root()
    toc = (root / "_toc.yml").read_text()
    return re.findall(r"file:\s*book/chapters/([\w\-]+)", toc)


def load_profile(name: str, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Each chapter's parameters under a profile. A profile's ``shared`` block declares parameters
    that several chapters must agree on once (``shared: {digit_models: {chapters: [...], width: ...}}``);
    they are given to each chapter named, and a chapter that also sets one is an error."""
    import yaml

    root = root or paths.root()
    path = root / "profiles" / f"{name}.yml"
    if not path.exists():
        known = sorted(p.stem for p in (root / "profiles").glob("*.yml"))
        raise BuildError(f"unknown profile {name!r}; known profiles: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    shared = data.pop("shared", None) or {}
    known = set(chapters(root))
    unknown = set(data) - known
    if unknown:
        raise BuildError(f"profile {name!r} names chapters that are not in _toc.yml: {sorted(unknown)}")
    for group, block in shared.items():
        block = dict(block or {})
        names = block.pop("chapters", None)
        if not isinstance(names, list) or not names or set(names) - known:
            raise BuildError(f"profile {name!r}: shared.{group}.chapters must list chapters of _toc.yml; got {names!r}")
        for chapter in names:
            own = dict(data.get(chapter) or {})
            clash = sorted(set(own) & set(block))
            if clash:
                raise BuildError(f"profile {name!r}: {chapter} sets {clash}, which shared.{group} declares for {names}; set them in one place")
            data[chapter] = {**block, **own}
    return data


def shared_parameters(name: str, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """A profile's ``shared`` block: group -> {"chapters": [...], parameter: value, ...}."""
    import yaml

    root = root or paths.root()
    return (yaml.safe_load((root / "profiles" / f"{name}.yml").read_text()) or {}).get("shared") or {}


def _notebook_defaults(nb_path: Path) -> dict[str, Any]:
    """The parameters of a chapter notebook with their defaults (its cell tagged ``parameters``), as
    papermill reads them; each default must be a literal."""
    import ast

    import papermill

    out: dict[str, Any] = {}
    for name, info in papermill.inspect_notebook(str(nb_path)).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            raise BuildError(f"{nb_path.name}: the default of parameter {name!r} is not a literal: {info['default']}") from None
    return out


def _notebook_parameters(nb_path: Path) -> set[str]:
    return set(_notebook_defaults(nb_path))


def resolve_parameters(name: str, profile: str, overrides: dict[str, Any] | None = None, root: Path | None = None) -> dict[str, Any]:
    """A chapter's parameters under a profile with overrides, checked; every problem in one error."""
    root = root or paths.root()
    src = root / "notebooks" / f"{name}.ipynb"
    if name not in chapters(root) or not src.exists():
        raise BuildError(f"unknown chapter {name!r}; chapters: {chapters(root)}")
    params = dict(load_profile(profile, root).get(name, {}) or {})
    params.update(overrides or {})
    params.pop("profile", None)
    problems = parameters.check(name, params, _notebook_defaults(src))
    if problems:
        raise BuildError(f"chapter {name!r}, profile {profile!r}: bad parameter(s), nothing was run:\n  " + "\n  ".join(problems))
    return params


@contextmanager
def _environ(**values: str):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _errors(nb) -> list[str]:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"{o.get('ename')}: {o.get('evalue')}")
    return out


def execute_chapter(name: str, profile: str = "default", overrides: dict[str, Any] | None = None, root: Path | None = None) -> Path:
    """Execute one chapter with papermill; on success publish it to ``book/chapters/<name>.ipynb``
    together with its claims. A failed run publishes nothing and leaves the published chapter as it was."""
    import nbformat
    import papermill as pm

    root = root or paths.root()
    params = resolve_parameters(name, profile, overrides, root)
    src = root / "notebooks" / f"{name}.ipynb"
    params["profile"] = profile
    out_dir = root / "book" / "chapters"
    failed_dir = paths.build_dir() / "failed"
    run_id = uuid.uuid4().hex[:12]
    work = paths.build_dir() / "executing" / run_id
    tmp, staging = work / f"{name}.ipynb", work / "claims"
    staging.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"[book] executing {name} (profile {profile}, parameters {json.dumps(params, default=str)})", flush=True)
    try:
        with _environ(GEED_ROOT=str(root), GEED_RUN_ID=run_id, GEED_CLAIMS_STAGING=str(staging)):
            try:
                pm.execute_notebook(str(src), str(tmp), parameters=params, cwd=str(root), kernel_name="python3",
                                    progress_bar=False, log_output=False, stdout_file=_Flushing(sys.stdout),
                                    stderr_file=_Flushing(sys.stderr), extra_arguments=["--IPKernelApp.log_level=ERROR"])
                error = None
            except Exception as exc:  # papermill raises PapermillExecutionError, but a dead kernel raises others
                error = f"{type(exc).__name__}: {exc}"
        nb = nbformat.read(tmp, as_version=4) if tmp.exists() else None
        errs = _errors(nb) if nb is not None else []
        staged = staging / f"{name}.json"
        if not error and not errs and not staged.exists():
            errs = [f"the notebook never recorded its run (it must create geed.report.Chapter({name!r}, profile, ...))"]
        if error or errs:
            failed_dir.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                os.replace(tmp, failed_dir / f"{name}.ipynb")
            detail = error or "; ".join(errs)
            raise BuildError(f"chapter {name!r} failed; its notebook is in {failed_dir / (name + '.ipynb')} and was not published "
                             f"(the published chapter and its claims are unchanged).\n{detail}")
        for cell in nb.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "parameters" in tags or "injected-parameters" in tags:
                cell.metadata["tags"] = sorted(set(tags) | {"remove-cell"})
        nb.metadata["geed"] = {"run_id": run_id, "profile": profile, "params": params, "code_version": code_version()}
        out_dir.mkdir(parents=True, exist_ok=True)
        dest = out_dir / f"{name}.ipynb"
        page_tmp = out_dir / f".{name}.ipynb.tmp"
        nbformat.write(nb, page_tmp)
        published = paths.claims_dir() / f"{name}.json"
        published.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, published)  # the pair is checked by run id: a crash between the two is detected
        os.replace(page_tmp, dest)
        (out_dir / f"{name}.md").unlink(missing_ok=True)  # a placeholder of a chapter not executed before
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"[book] {name}: done in {time.time() - t0:.0f} s -> {dest.relative_to(root)}", flush=True)
    return dest


def write_vega_bundle(root: Path | None = None) -> Path:
    """Serve vega, vega-lite and vega-embed from the book (no CDN): a bundle from vl-convert that
    registers them globally and tells altair's HTML output they are already loaded."""
    import altair as alt
    import vl_convert as vlc

    root = root or paths.root()
    probe = alt.Chart().mark_point()._repr_mimebundle_()
    html = (probe[0] if isinstance(probe, tuple) else probe)["text/html"]
    versions = dict(re.findall(r'maybeLoadScript\("([\w-]+)", "([\w.]+)"\)', html))
    debug = {f"{k.replace('-', '')}_version": v for k, v in versions.items()}
    vl_minor = ".".join(alt.VEGALITE_VERSION.split(".")[:2])
    available = vlc.get_vegalite_versions()
    vl = vl_minor if vl_minor in available else available[-1]
    snippet = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"
    bundle = vlc.javascript_bundle(snippet, vl_version=vl)
    text = f"window.VEGA_DEBUG = {json.dumps(debug)};\n(function(){{\n{bundle}\n}})();\n"
    dest = root / "_static" / "vega-bundle.js"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.read_text() != text:
        dest.write_text(text)
    return dest


def _title(nb_path: Path) -> str:
    import nbformat

    for cell in nbformat.read(nb_path, as_version=4).cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return nb_path.stem


def _placeholders(root: Path) -> list[str]:
    """A page for every chapter not executed yet, saying so; returns those chapters."""
    out_dir = root / "book" / "chapters"
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = []
    for c in chapters(root):
        page, placeholder = out_dir / f"{c}.ipynb", out_dir / f"{c}.md"
        if page.exists():
            placeholder.unlink(missing_ok=True)
            continue
        missing.append(c)
        placeholder.write_text(f"# {_title(root / 'notebooks' / f'{c}.ipynb')}\n\n```{{warning}}\nThis chapter has not been executed in this "
                               f"build, so it has no results. Run `python -m geed.report run {c} --profile <profile>` and then "
                               "`python -m geed.report html`.\n```\n")
    return missing


def ledger_inputs(root: Path | None = None) -> dict[str, str]:
    """The run id of every chapter whose claims are published (what the ledger summarises)."""
    root = root or paths.root()
    return {c: claims.run_meta(c).get("run_id", "") for c in chapters(root) if c != "ledger" and claims.run_meta(c)}


def glance(root: Path | None = None) -> str:
    """The front page's results at a glance (Markdown), computed from the published claims."""
    import html as _html

    root = root or paths.root()
    names = [c for c in chapters(root) if c != "ledger"]
    ledger = claims.load_all(names)
    issues = claims.consistency(chapters(root), root / "book" / "chapters")
    lines = ["## Results at a glance", ""]
    if issues:
        lines += ["```{warning}", "These results do not come from one consistent build:", ""] + [f"* {i}" for i in issues] + ["```", ""]
    metas = {c: claims.run_meta(c) for c in names}
    profiles = sorted({m.get("profile", "unknown") for m in metas.values() if m})
    if ledger.empty:
        return "\n".join(lines + ["No chapter has been executed yet: run `python -m geed.report build`.", ""])
    lines += [f"Executed under the profile {', '.join(f'`{p}`' for p in profiles)}; every verdict is computed from the "
              "chapter's own measurements (see the [claims ledger](chapters/ledger)).", "",
              "| chapter | " + " | ".join(claims.STATUSES) + " | headline claim and its verdict |",
              "|---|" + "---|" * len(claims.STATUSES) + "---|"]
    per_chapter = verdict_counts(ledger, names)
    for c in names:
        rows = ledger[ledger.chapter == c]
        if rows.empty:
            continue
        counts = [str(int(per_chapter.loc[c, s])) for s in claims.STATUSES]
        key = rows[rows.key].iloc[0] if rows.key.any() else rows.iloc[0]
        figures = key["figures"] or ""
        figures = figures if len(figures) <= 160 else figures[:157] + "..."
        headline = f"{key['id']}: {key['claim']} **{key['verdict']}** ({figures})"
        headline = _html.escape(headline, quote=False).replace("|", "\\|")
        lines.append(f"| [{_title(root / 'notebooks' / f'{c}.ipynb')}](chapters/{c}) | " + " | ".join(counts) + f" | {headline} |")
    return "\n".join(lines + [""])


def build_html(root: Path | None = None) -> None:
    """Compile the executed chapters. Chapters never executed get a page saying so; a page whose
    claims come from another run stops the build; a stale ledger is re-executed first."""
    root = root or paths.root()
    missing = _placeholders(root)
    if missing:
        print(f"[book] not executed yet, marked as such: {missing}", flush=True)
    mismatch = [p for p in claims.consistency(chapters(root), root / "book" / "chapters")
                if "different runs" in p or "is not" in p]
    if mismatch:
        raise BuildError("published pages and claims disagree; re-run these chapters:\n  " + "\n  ".join(mismatch))
    if "ledger" in chapters(root) and "ledger" not in missing and ledger_inputs(root) != claims.run_meta("ledger").get("inputs"):
        print("[book] the ledger is older than the published claims: re-executing it", flush=True)
        execute_chapter("ledger", claims.run_meta("ledger").get("profile", "default"), root=root)
    (root / "book" / "chapters" / "_glance.md").write_text(glance(root))
    write_vega_bundle(root)
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(root), "-W", "-n", "--keep-going", "--all"]
    if subprocess.run(["jupyter-book", "--version"], capture_output=True).returncode == 0:
        cmd = ["jupyter-book", "build", str(root), "-W", "-n", "--keep-going", "--all"]
    print("[book] " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, cwd=root)
    if res.returncode != 0:
        raise BuildError(f"jupyter-book build failed (exit {res.returncode}); see the warnings above")
    print(f"[book] built {root / '_build' / 'html' / 'index.html'}", flush=True)


def check(profile: str, root: Path | None = None) -> tuple[list, list[str]]:
    """The inputs of the paper's protocol (found or not) and a rough time per chapter for ``profile``."""
    from geed.report import inputs

    root = root or paths.root()
    found = inputs.survey()
    lines = []
    for c in chapters(root):
        params = resolve_parameters(c, profile, root=root)
        last = claims.run_meta(c)
        secs = inputs.estimate_seconds(c, params, last.get("params"), last.get("seconds"))
        lines.append(f"{c}: " + ("no timed run to scale from" if secs is None else
                                 f"about {secs / 60:.0f} min (scaled from the last run: {last.get('profile')}, "
                                 f"{last.get('seconds', 0) / 60:.1f} min on {last.get('device', 'unknown device')})"))
    return found, lines


def _report(found, lines) -> str:
    out = ["Inputs of the paper's protocol:"]
    for i in found:
        out.append(f"  [{'found' if i.found else 'MISSING'}] {i.name} ({i.needed_by}): {i.where}"
                   + ("" if i.found else f"\n      substitute: {i.substitute}"))
    out += ["Rough time per chapter (models x iterations x width^2, scaled from the last timed run):"] + [f"  {ln}" for ln in lines]
    return "\n".join(out)


def build(profile: str = "default", only: list[str] | None = None, html: bool = True, root: Path | None = None,
          accept_substitutes: bool = False) -> None:
    root = root or paths.root()
    if profile == "paper" and not accept_substitutes:
        from geed.report import inputs

        lacking = inputs.missing()
        if lacking:
            raise BuildError("the paper profile needs inputs this machine does not have; nothing was run:\n"
                             + "\n".join(f"  {i.name} ({i.needed_by}): {i.where}\n      substitute: {i.substitute}" for i in lacking)
                             + "\nProvide them, or run with --accept-substitutes to build the paper's protocol on the substitutes named above "
                               "(each chapter states the ones it used).")
    if profile not in PROFILES and not (root / "profiles" / f"{profile}.yml").exists():
        raise BuildError(f"unknown profile {profile!r}; known: {list(PROFILES)}")
    t0 = time.time()
    names = chapters(root)
    if only:
        bad = set(only) - set(names)
        if bad:
            raise BuildError(f"unknown chapter(s) {sorted(bad)}; chapters: {names}")
        names = [n for n in names if n in only]
    problems = []
    for name in names:  # every chapter's parameters are checked before any chapter runs
        try:
            resolve_parameters(name, profile, root=root)
        except BuildError as exc:
            problems.append(str(exc))
    if problems:
        raise BuildError("\n".join(problems))
    for i, name in enumerate(names, 1):
        print(f"[book] chapter {i}/{len(names)}", flush=True)
        execute_chapter(name, profile, root=root)
    if html:
        build_html(root)
    print(f"[book] finished in {time.time() - t0:.0f} s", flush=True)


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m geed.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="execute every chapter under a profile, then compile the HTML")
    b.add_argument("--profile", default="default")
    b.add_argument("--only", nargs="*", help="execute only these chapters (others keep their last output)")
    b.add_argument("--no-html", action="store_true")
    b.add_argument("--accept-substitutes", action="store_true", help="paper profile: build on the named substitutes of missing inputs")
    k = sub.add_parser("check", help="list the inputs the paper's protocol needs, what is found, and a rough time per chapter")
    k.add_argument("--profile", default="paper")
    r = sub.add_parser("run", help="execute one chapter with a profile and parameter overrides")
    r.add_argument("chapter")
    r.add_argument("--profile", default="default")
    r.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    sub.add_parser("html", help="compile the executed chapters into HTML")
    sub.add_parser("chapters", help="list the chapters")
    args = ap.parse_args(argv)
    root = paths.root()
    try:
        if args.cmd == "build":
            build(args.profile, args.only, html=not args.no_html, root=root, accept_substitutes=args.accept_substitutes)
        elif args.cmd == "check":
            print(_report(*check(args.profile, root)))
        elif args.cmd == "run":
            execute_chapter(args.chapter, args.profile, {k: _parse_value(v) for k, v in args.parameter}, root=root)
        elif args.cmd == "html":
            build_html(root)
        else:
            print("\n".join(chapters(root)))
    except BuildError as exc:
        print(f"[book] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
