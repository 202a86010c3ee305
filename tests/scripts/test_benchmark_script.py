"""The benchmark script's code paths run and report what its table needs (its timings are not tested)."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_row_has_paired_ratios_for_every_method(bench):
    row = bench.time_ratio("c8cnn", "C8", 2, repeats=2)
    assert set(row) >= {"model", "group", "n", "chunk", "threads", "bare", "geed", "geed, tensor path", "plain loop", "e2cnn recipe"}
    for method in ("bare", "geed", "geed, tensor path", "plain loop", "e2cnn recipe"):
        cell = row[method]
        assert cell["s"] > 0 and cell["lo"] <= cell["ratio"] <= cell["hi"]
    assert row["bare"]["ratio"] == 1.0
    assert bench._ratio(row["geed"]).endswith(")") and bench._ratio(None) == "-"
    narrow = bench.time_ratio("c8cnn@0.0417", "C8", 2, repeats=1)  # another width: geed and the bare passes only
    assert "plain loop" not in narrow and "e2cnn recipe" not in narrow
    from geed import _fused

    assert _fused.enabled  # the tensor-path rounds hand the compiled pass back


def test_the_reference_methods_run_on_the_same_job(bench):
    import geed
    from geed.models import create_model

    model = create_model("c8cnn-tiny", seed=0).eval()
    group = geed.get_group("C4", mask=True)
    x = torch.rand(2, 1, 29, 29)
    cw = model.layer_actions(group)
    bench.plain_loop(model, x, group, cw, model.latent_layer)
    bench.e2cnn_recipe(model, x, group, cw, chunk=2)
    assert not model.training


@pytest.mark.parametrize("method", ["bare", "geed"])
def test_the_peak_memory_child_reports_above_the_resident_memory_before(bench, capsys, method):
    bench._peak_child("c8cnn@0.0417", "C4", 4, method)
    import json

    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Linux keeps a process's resident-memory counts per CPU and reads them approximately (to a few hundred
    # kB on two cores), so a run that adds nothing can read a little below the mark taken before it
    assert out["above_mb"] >= -2 and out["peak_mb"] > out["above_mb"], out


@pytest.mark.slow
def test_the_memory_rows_take_medians_over_fresh_subprocesses(bench):
    row = bench.peak_memory("c8cnn@0.0417", "C4", 4, threads=1, repeats=2)
    for label, _ in bench.MEMORY_RUNS:
        assert len(row["runs"][label]) == 2
        cell = row[label]
        assert cell["lo"] <= cell["above"] <= cell["hi"] and cell["peak"] > 0
    assert bench._mb(row["geed"]).endswith(")")


def test_the_breakdown_splits_geeds_time(bench):
    rows = bench.breakdown("c8cnn@0.0417", "C8", n=2, rounds=1)
    (row,) = rows
    for method in ("bare", "geed"):
        parts = row[method]
        assert parts["wall"] > 0 and parts["model"] > 0
        assert abs(parts["wall"] - parts["model"] - parts["compiled"] - parts["rest"]) < 1e-9
    assert row["bare"]["compiled"] == 0 and row["geed"]["compiled"] > 0


def test_the_pass_alone_is_timed_four_ways_on_every_job(bench, monkeypatch):
    monkeypatch.setattr(bench, "PASS_JOBS", [("C8", 7, 4), ("D4", 6, 3)])
    rows = bench.pass_timings(rounds=2, samples=16)
    assert [r["group"] for r in rows] == ["C8", "D4"]
    elements = rows[0]["elements"].split(", ")
    assert elements.count("interpolated") == 1 and elements.count("derived") == 3
    assert "interpolated" not in rows[1]["elements"] and "derived" not in rows[1]["elements"]
    assert all(r[way] > 0 for r in rows for way in ("as formed", "none derived", "all built and turned", "one block"))


@pytest.mark.parametrize("gap, agrees", [(1e-15, True), (1e-6, False)])
def test_the_pass_alone_stops_where_two_ways_disagree_beyond_rounding(bench, monkeypatch, gap, agrees):
    """The four ways are compared before they are timed: a gap of float64 rounding (sums added in
    another order) passes, a real one stops the run."""
    from geed import _fused

    real, first = _fused.channelwise, []

    def shifted(Y, ref, action):  # every way but the first returns its values moved by ``gap``
        if not first:
            first.append(action)
        values, dead = real(Y, ref, action)
        return (values if action is first[0] else values + gap), dead

    monkeypatch.setattr(_fused, "channelwise", shifted)
    monkeypatch.setattr(bench, "PASS_JOBS", [("C8", 7, 4)])
    if agrees:
        assert len(bench.pass_timings(rounds=1, samples=16)) == 1
    else:
        with pytest.raises(SystemExit, match="disagree"):
            bench.pass_timings(rounds=1, samples=16)


def test_the_gpu_agreement_runs_and_hands_the_precision_switch_back(bench):
    """The comparison of a GPU's values with the CPU's, run here against the CPU itself: every gap is 0,
    but float64's."""
    import geed.orbit as orbit

    switch = orbit.full_float32
    row = bench.gpu_agreement("c8cnn@0.0417", "C4", 2, device="cpu")
    assert orbit.full_float32 is switch
    for label in ("GPU, full float32", "GPU, TF32 convolutions"):  # here: the CPU again
        assert row[label]["max"] == 0.0 and row[label]["mean"] == 0.0 and row[label]["where"]
    assert 0 < row["CPU, float64"]["max"] < 1e-3  # float32 rounding


def test_a_gap_is_infinite_where_one_value_is_undefined_and_the_other_not(bench):
    import numpy as np

    a = np.array([[0.5, np.nan], [0.25, 1.0]])
    assert bench._gap(a, a + 1e-3) == pytest.approx(1e-3)
    assert bench._gap(a, np.array([[0.5, 0.1], [0.25, 1.0]])) == float("inf")


def test_a_result_is_written_between_its_markers_with_its_provenance(bench, monkeypatch, tmp_path):
    import json
    from types import SimpleNamespace

    (tmp_path / "README.md").write_text("a\n<!-- benchmark-gpu:start -->\nold\n<!-- benchmark-gpu:end -->\nb\n")
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    args = SimpleNamespace(device="cpu", repeats=5, threads=1, memory_repeats=3, malloc="fixed", allocator="the allocator used",
                           quick=True, no_readme=False, json=str(tmp_path / "r.json"))
    bench._publish(args, "benchmark-gpu", ["new", "rows"], {"time": [1]}, bench.provenance(args))
    assert (tmp_path / "README.md").read_text() == "a\n<!-- benchmark-gpu:start -->\nnew\nrows\n<!-- benchmark-gpu:end -->\nb\n"
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["time"] == [1] and saved["provenance"]["command"] == "python scripts/benchmark.py --repeats 5 --quick"
    assert len(saved["provenance"]["geed_sources"]) == 12 and saved["provenance"]["torch"] == torch.__version__
    assert saved["provenance"]["allocator"] == "the allocator used"
    assert bench._command(SimpleNamespace(**{**vars(args), "malloc": "default"})).endswith("--repeats 5 --malloc default --quick")
    with pytest.raises(SystemExit, match="no <!-- benchmark:start -->"):
        bench._publish(args, "benchmark", ["x"], {}, {})


def test_the_cpu_table_names_the_sources_it_timed(bench, monkeypatch, tmp_path):
    """The README's CPU block carries the provenance the GPU block does: the geed sources' hash, the commit
    and the date, beside the machine and the command."""
    from geed.report.cache import code_version

    (tmp_path / "README.md").write_text("<!-- benchmark:start -->\nold\n<!-- benchmark:end -->\n")
    monkeypatch.setattr(bench, "ROOT", tmp_path)  # README and git: a folder that is not a repository (no commit)
    monkeypatch.setattr(bench, "QUICK", [("c8cnn@0.0417", "C4", [2])])
    monkeypatch.setattr(bench, "QUICK_MEMORY", [])
    # the allocator left adaptive: the fixed policy would keep this test process's heap for the tests after it
    monkeypatch.setattr("sys.argv", ["benchmark.py", "--quick", "--repeats", "1", "--malloc", "default"])
    bench.main()
    block = (tmp_path / "README.md").read_text()
    assert f"geed sources {code_version()}, " in block and "(commit" not in block
    assert "| c8cnn@0.0417 | C4 | 2 |" in block and "Command: `python scripts/benchmark.py --repeats 1 --malloc default --quick`" in block


def test_the_forward_work_per_value_grows_with_the_width(bench):
    """The multiply-adds per captured value double with the width, but for the first block (one input
    channel at any width) and the classifier; the C8-CNN counts as the CNN of the same skeleton does, so
    e2cnn's convolutions are counted."""
    per_value = lambda name: bench.work_per_value(bench._job(name, "C8", 1))  # noqa: E731
    narrow, wide = per_value("cnn@0.125"), per_value("cnn@0.25")
    assert 1.9 < wide / narrow < 2.0
    assert per_value("c8cnn@0.125") == pytest.approx(narrow, rel=1e-9)


def test_the_widths_table_is_written_to_its_block(bench, monkeypatch, tmp_path):
    readme = tmp_path / "README.md"
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    monkeypatch.setattr(bench, "WIDTHS", (0.0417,))
    monkeypatch.setattr("sys.argv", ["benchmark.py", "--widths", "--n", "2", "--repeats", "1", "--malloc", "default"])
    for held in ("old\n", ""):  # a block with a result in it, and an empty one
        readme.write_text(f"a\n<!-- benchmark-widths:start -->\n{held}<!-- benchmark-widths:end -->\nb\n")
        bench.main()
        block = readme.read_text()
        assert "| cnn | 0.0417 |" in block and "| c8cnn | 0.0417 |" in block and "old" not in block
        assert block.startswith("a\n<!-- benchmark-widths:start -->\nMeasured on ") and block.endswith("|\n<!-- benchmark-widths:end -->\nb\n")
        assert "Command: `python scripts/benchmark.py --repeats 1 --malloc default --widths --n 2`" in block
    for bad in (["--widths", "--n", "0"], ["--widths", "--device", "cuda"]):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr("sys.argv", ["benchmark.py", *bad])
        with pytest.raises(SystemExit):
            bench.main()


def test_a_missing_readme_block_is_refused_before_any_work(bench, monkeypatch, tmp_path, capsys):
    (tmp_path / "README.md").write_text("<!-- benchmark:start -->\n<!-- benchmark:end -->\n")
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    monkeypatch.setattr(bench, "width_ratios", lambda *a, **k: pytest.fail("the widths were timed before the README was checked"))
    monkeypatch.setattr("sys.argv", ["benchmark.py", "--widths", "--malloc", "default"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "no <!-- benchmark-widths:start -->" in capsys.readouterr().err


def test_an_unusable_device_is_refused_before_any_work(bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, why in (("cuda", "no CUDA device is available"), ("tpu", "expected cpu or cuda")):
        monkeypatch.setattr("sys.argv", ["benchmark.py", "--device", device])
        with pytest.raises(SystemExit):
            bench.main()
        assert why in capsys.readouterr().err


def test_the_gpu_profiles_operation_count_runs_on_a_cpu_and_puts_everything_back():
    spec = importlib.util.spec_from_file_location("profile_gpu", ROOT / "scripts" / "profile_gpu.py")
    profile_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile_gpu)
    from geed import _fused, _fused_cuda, orbit

    before = (_fused.supports, _fused_cuda.supports, _fused_cuda.channelwise, orbit._SHARED_STORE)
    ops = profile_gpu.count_ops(16)
    assert ops["convolution"] > 0 and sum(ops.values()) > ops["convolution"]
    assert not set(ops) & profile_gpu.VIEWS
    assert (_fused.supports, _fused_cuda.supports, _fused_cuda.channelwise, orbit._SHARED_STORE) == before


def test_the_split_times_each_part_of_an_evaluation_against_the_bare_passes(bench):
    from geed import _fused

    compiled, planned = _fused.channelwise, _fused._plan
    out = bench.split("cnn@0.0417", n=2, rounds=2)
    # the pass that returns zeros, and the plan that moves no pixel, were only lent to one method each
    assert _fused.channelwise is compiled and _fused._plan is planned
    assert list(out) == list(bench.SPLIT_METHODS)
    assert all(r["q1"] <= r["median"] <= r["q3"] and r["median"] > 0 for r in out.values())


FREED_AND_TAKEN_AGAIN = """
import resource, sys
import numpy as np
sys.path.insert(0, "scripts")
import benchmark
print(benchmark.fix_allocator(sys.argv[1]))
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a, b = np.ones(2**19), np.ones(2**20)  # 4 and 8 MB, freed and taken again: as a forward pass's buffers are
del a, b
before = faults()
for _ in range(10):
    a, b = np.ones(2**19), np.ones(2**20)
    del a, b
print(faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and the kernel's fault counts")
def test_the_timings_keep_the_heap_so_freed_buffers_are_not_faulted_in_again():
    """With the allocator fixed the buffers a pass frees are taken again without page faults; with glibc's
    adaptive defaults (the same code) they are handed back and faulted in again. Run in subprocesses:
    ``mallopt`` would change the allocator of the test process."""
    import subprocess

    runs = {policy: subprocess.run([sys.executable, "-c", FREED_AND_TAKEN_AGAIN, policy], cwd=ROOT, capture_output=True, text=True,
                                   check=True).stdout.split("\n") for policy in ("fixed", "default")}
    assert runs["fixed"][0].startswith("glibc mmap threshold 32 MiB") and runs["default"][0] == "glibc's adaptive defaults"
    assert int(runs["fixed"][1]) < 50 and int(runs["default"][1]) > 200


def test_an_unknown_allocator_policy_is_refused(bench):
    with pytest.raises(ValueError, match="'fixed' or 'default'"):
        bench.fix_allocator("kept")
