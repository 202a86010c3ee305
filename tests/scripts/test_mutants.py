"""scripts/mutants.py: every deliberate break still applies to the code as it is and names a test
that exists (the breaks themselves are run by the script, not here: about nine minutes)."""
import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mutants():
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_once_and_names_an_existing_test(mutants):
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names))
    for m in mutants.MUTANTS:
        assert mutants.site_count(m) == 1, f"{m.name}: its lines occur {mutants.site_count(m)} times in {m.path}"
        assert m.new != m.old
        file, _, function = m.test.partition("::")
        tree = ast.parse((ROOT / file).read_text())
        assert function in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, f"{m.name}: no test {m.test}"


@pytest.mark.slow  # copies the project and runs a test there
def test_a_mutant_whose_lines_are_gone_is_reported_as_drifted(mutants):
    gone = mutants.Mutant("gone", "geed/stats.py", "this line is not in the source", "x", "tests/core/test_stats.py::test_t_interval_matches_scipy")
    assert mutants.site_count(gone) == 0
    lines = []
    assert mutants.run([gone], out=lines.append) == {"caught": [], "survived": [], "drifted": ["gone"]}
    assert "DRIFTED" in lines[-1]
