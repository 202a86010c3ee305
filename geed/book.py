"""Build the book: execute chapter notebooks with papermill under a profile, then compile with Jupyter Book.

Usage (from the project root)::

    python -m geed.book build --profile default      # every chapter, then the HTML
    python -m geed.book run section3 --profile smoke -p n_points 8   # one chapter, no rebuild of others
    python -m geed.book html                         # compile what has been executed

Chapters are the ``book/chapters/<name>`` entries of ``_toc.yml``; their sources are
``notebooks/<name>.ipynb``; a profile (``profiles/<name>.yml``) gives each chapter's parameters.
A chapter that fails (papermill error, or an error output in the executed notebook) stops the
build; its notebook goes to ``build/failed/`` and is never published. Parameter cells are tagged
``remove-cell`` so the pages show results, not papermill's plumbing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import claims, paths
from .cache import code_version

__all__ = ["Chapter", "chapters", "load_profile", "execute_chapter", "build", "main"]

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

    def flush(self) -> None:
        self.stream.flush()


# ----------------------------------------------------------------------------- inside a chapter
class Chapter:
    """Used by a chapter notebook: resets its claims, times it, records claims, shows provenance."""

    def __init__(self, name: str, profile: str = "default", **params: Any) -> None:
        self.name, self.profile, self.params = name, profile, params
        self.started = time.time()
        claims.reset(name)

    def claim(self, claim_id: str, source: str, claim: str, verdict: claims.Verdict, note: str = "") -> None:
        claims.record(self.name, claim_id, source, claim, verdict, note)

    def provenance(self):
        import pandas as pd
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
        rows = [
            ("profile", self.profile),
            ("parameters", json.dumps(self.params, default=str)),
            ("device", device),
            ("code version (hash of geed/)", code_version()),
            ("git commit", _git_commit()),
            ("torch", torch.__version__),
            ("python", platform.python_version()),
            ("time taken", f"{time.time() - self.started:.1f} s"),
        ]
        return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.root(), capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------- the driver
def chapters(root: Path | None = None) -> list[str]:
    """Chapter names in book order, read from ``_toc.yml``."""
    root = root or paths.root()
    toc = (root / "_toc.yml").read_text()
    return re.findall(r"file:\s*book/chapters/([\w\-]+)", toc)


def load_profile(name: str, root: Path | None = None) -> dict[str, dict[str, Any]]:
    import yaml

    root = root or paths.root()
    path = root / "profiles" / f"{name}.yml"
    if not path.exists():
        known = sorted(p.stem for p in (root / "profiles").glob("*.yml"))
        raise BuildError(f"unknown profile {name!r}; known profiles: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - set(chapters(root))
    if unknown:
        raise BuildError(f"profile {name!r} names chapters that are not in _toc.yml: {sorted(unknown)}")
    return data


def _notebook_parameters(nb_path: Path) -> set[str]:
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    names: set[str] = set()
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            names |= set(re.findall(r"^(\w+)\s*(?::[^=]+)?=", cell.source, re.M))
    return names


def _errors(nb) -> list[str]:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"{o.get('ename')}: {o.get('evalue')}")
    return out


def execute_chapter(name: str, profile: str = "default", overrides: dict[str, Any] | None = None, root: Path | None = None) -> Path:
    """Execute one chapter with papermill; on success write it to ``book/chapters/<name>.ipynb``."""
    import nbformat
    import papermill as pm

    root = root or paths.root()
    src = root / "notebooks" / f"{name}.ipynb"
    if name not in chapters(root) or not src.exists():
        raise BuildError(f"unknown chapter {name!r}; chapters: {chapters(root)}")
    params = dict(load_profile(profile, root).get(name, {}))
    params.update(overrides or {})
    known = _notebook_parameters(src) - {"profile"}
    unknown = set(params) - known
    if unknown:
        raise BuildError(f"chapter {name!r} has no parameter(s) {sorted(unknown)}; its parameters: {sorted(known)}")
    params["profile"] = profile
    out_dir = root / "book" / "chapters"
    failed_dir = paths.build_dir() / "failed"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.build_dir() / "executing" / f"{name}.ipynb"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    env_before = os.environ.get("GEED_ROOT")
    os.environ["GEED_ROOT"] = str(root)
    t0 = time.time()
    print(f"[book] executing {name} (profile {profile}, parameters {json.dumps(params, default=str)})", flush=True)
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=params, cwd=str(root), kernel_name="python3",
                            progress_bar=False, log_output=False, stdout_file=_Flushing(sys.stdout), stderr_file=_Flushing(sys.stderr))
        error = None
    except Exception as exc:  # papermill raises PapermillExecutionError, but a dead kernel raises others
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if env_before is None:
            os.environ.pop("GEED_ROOT", None)
        else:
            os.environ["GEED_ROOT"] = env_before
    nb = nbformat.read(tmp, as_version=4) if tmp.exists() else None
    errs = _errors(nb) if nb is not None else []
    if error or errs:
        failed_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            os.replace(tmp, failed_dir / f"{name}.ipynb")
        detail = error or "; ".join(errs)
        raise BuildError(f"chapter {name!r} failed; its notebook is in {failed_dir / (name + '.ipynb')} and was not published.\n{detail}")
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            cell.metadata["tags"] = sorted(set(tags) | {"remove-cell"})
    dest = out_dir / f"{name}.ipynb"
    nbformat.write(nb, dest)
    tmp.unlink(missing_ok=True)
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


def build_html(root: Path | None = None) -> None:
    root = root or paths.root()
    missing = [c for c in chapters(root) if not (root / "book" / "chapters" / f"{c}.ipynb").exists()]
    if missing:
        raise BuildError(f"chapters not executed yet: {missing}; run `python -m geed.book build` first")
    write_vega_bundle(root)
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(root), "-W", "-n", "--keep-going", "--all"]
    if subprocess.run(["jupyter-book", "--version"], capture_output=True).returncode == 0:
        cmd = ["jupyter-book", "build", str(root), "-W", "-n", "--keep-going", "--all"]
    print("[book] " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, cwd=root)
    if res.returncode != 0:
        raise BuildError(f"jupyter-book build failed (exit {res.returncode}); see the warnings above")
    print(f"[book] built {root / '_build' / 'html' / 'index.html'}", flush=True)


def build(profile: str = "default", only: list[str] | None = None, html: bool = True, root: Path | None = None) -> None:
    root = root or paths.root()
    if profile not in PROFILES and not (root / "profiles" / f"{profile}.yml").exists():
        raise BuildError(f"unknown profile {profile!r}; known: {list(PROFILES)}")
    t0 = time.time()
    names = chapters(root)
    if only:
        bad = set(only) - set(names)
        if bad:
            raise BuildError(f"unknown chapter(s) {sorted(bad)}; chapters: {names}")
        names = [n for n in names if n in only]
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
    ap = argparse.ArgumentParser(prog="python -m geed.book", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="execute every chapter under a profile, then compile the HTML")
    b.add_argument("--profile", default="default")
    b.add_argument("--only", nargs="*", help="execute only these chapters (others keep their last output)")
    b.add_argument("--no-html", action="store_true")
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
            build(args.profile, args.only, html=not args.no_html, root=root)
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
