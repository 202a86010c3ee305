"""scripts/mutants.py: every deliberate break still applies to the code as it is and names a test
that exists (the breaks themselves are run by the script, not here; CI runs those of the core metrics after the tests)."""
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


def test_the_breaks_of_some_files_may_be_chosen_and_an_unknown_file_is_refused(mutants, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["mutants.py", "--list", "--file", "geed/metrics.py", "--file", "geed/_fused.py"])
    assert mutants.main() == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("    ")]
    assert sorted(set(listed)) == ["geed/_fused.py", "geed/metrics.py"]
    assert len(listed) == sum(m.path in ("geed/metrics.py", "geed/_fused.py") for m in mutants.MUTANTS)
    monkeypatch.setattr(sys, "argv", ["mutants.py", "--list", "--file", "geed/no_such_file.py"])
    with pytest.raises(SystemExit) as exit_:
        mutants.main()
    assert exit_.value.code == 2 and "no mutant breaks geed/no_such_file.py" in capsys.readouterr().err
