"""Streaming evaluation gives the values of the whole-orbit reference path, at any chunk size."""
import types

import numpy as np
import pytest
import torch
from torch import nn

import geed
from geed import orbit
from geed.models import create_model
from geed.orbit import auto_chunk_size, evaluate_reference


def _same(a, b, tol):
    sa, sb = a.summary().set_index(["metric", "layer"]), b.summary().set_index(["metric", "layer"])
    assert list(sa.index) == list(sb.index)
    for col in ("value", "M", "dead_fraction"):
        if col in sa:
            x, y = sa[col].to_numpy(float), sb[col].to_numpy(float)
            assert np.allclose(x, y, atol=tol, rtol=tol, equal_nan=True), (col, x, y)
    for key, r in a.results.items():
        assert np.allclose(r.per_pair, b.results[key].per_pair, atol=tol, rtol=tol, equal_nan=True), key
        other = b.results[key]
        assert r.name == other.name and r.meta.keys() == other.meta.keys(), (key, r.name, other.name, r.meta, other.meta)
        for field, value in r.meta.items():  # names and descriptions as the public functions give them
            assert value == other.meta[field] if isinstance(value, str) else np.isclose(value, other.meta[field], rtol=tol, atol=tol), (key, field)


@pytest.mark.parametrize("family, chunk", [pytest.param("cnn-tiny", 1, marks=pytest.mark.slow), ("cnn-tiny", 20), ("c8cnn-tiny", 12), ("c8cnn-tiny", None)])
def test_streaming_equals_the_reference_path_on_the_digit_models(family, chunk):
    from geed.data.digits import rotated_digits

    model = create_model(family, seed=0).eval()
    x = rotated_digits("test").subset(7, seed=0).x
    g = geed.get_group("C8", mask=True)
    kw = dict(channelwise=model.layer_actions(g), latent="latent", references=("orbit", "input"), dtype=torch.float64)
    _same(geed.evaluate(model, x, g, chunk_size=chunk, **kw), evaluate_reference(model, x, g, **kw), 1e-9)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled pass", "tensor path"])
def test_the_gpus_bookkeeping_gives_the_same_values_on_a_cpu(compiled, monkeypatch):
    """On a GPU every metric's values and dead counts are kept in shared device arrays and read once at
    the end; the same bookkeeping, run on a CPU, gives the reference path's values and dead shares."""
    from geed import _fused
    from geed.data.digits import rotated_digits

    monkeypatch.setattr(orbit, "_SHARED_STORE", True)
    monkeypatch.setattr(_fused, "enabled", compiled)
    stores = []
    real = orbit._Collected.on_host
    monkeypatch.setattr(orbit._Collected, "on_host", lambda self, v, d: stores.append(d) or real(self, v, d))
    model = create_model("c8cnn-tiny", seed=0).eval()
    x = rotated_digits("test").subset(9, seed=1).x
    g = geed.get_group("C8", mask=True)
    kw = dict(channelwise=model.layer_actions(g), latent="latent", references=("orbit", "input"), dtype=torch.float64)
    got = geed.evaluate(model, x, g, chunk_size=16, **kw)
    assert stores and any(d > 0 for d in stores)  # the shared arrays were used, dead counts among them
    _same(got, evaluate_reference(model, x, g, **kw), 1e-9)


def test_streaming_equals_the_reference_path_on_resnet18_under_d4():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(5, 3, 32, 32)
    g = geed.get_group("D4")
    kw = dict(channelwise={n: None for n in ("layer1", "layer2", "layer3", "layer4")}, latent="avgpool",
              reference_points=torch.rand(6, 3, 32, 32))
    _same(geed.evaluate(model, x, g, chunk_size=16, **kw), evaluate_reference(model, x, g, **kw), 2e-5)


def test_the_automatic_chunk_follows_the_memory_budget():
    model = create_model("cnn-tiny", seed=0).eval()
    x = torch.rand(1, 1, 29, 29)
    assert auto_chunk_size(model, x, []) == 64
    assert auto_chunk_size(model, x, ["block1"]) == 64
    one = auto_chunk_size(model, x, ["block1"], budget=1)
    assert one == 1
    per_input = model.block1(model.input_mask(x)).numel() * 4
    assert auto_chunk_size(model, x, ["block1"], budget=10 * per_input) == 10
    with pytest.raises(ValueError, match="memory budget must be a positive whole number of bytes; got 0"):
        auto_chunk_size(model, x, ["block1"], budget=0)
    with pytest.raises(ValueError, match="got '1GB'"):
        auto_chunk_size(model, x, ["block1"], budget="1GB")
    with pytest.raises(ValueError, match="memory budget"):
        geed.evaluate(model, x.repeat(2, 1, 1, 1), "C4", channelwise={"block1": None}, memory_budget=-1)
    with pytest.raises(ValueError, match="memory budget"):  # also beside a chunk size, before any forward pass
        geed.evaluate(model, x.repeat(2, 1, 1, 1), "C4", channelwise={"block1": None}, chunk_size=8, memory_budget=0.5)
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        geed.evaluate(model, x, "C4", chunk_size=0)


def test_progress_reports_rate_and_time_left_and_is_off_by_default(capsys, monkeypatch):
    from geed import orbit
    from geed.data.digits import rotated_digits

    model = create_model("cnn-tiny", seed=0).eval()
    x = rotated_digits("test").subset(12, seed=0).x
    g = geed.get_group("C4", mask=True)
    geed.evaluate(model, x, g, latent="latent", chunk_size=8)
    assert capsys.readouterr().err == ""
    lines: list[str] = []
    monkeypatch.setattr(orbit, "PROGRESS_EVERY_S", 0.0)  # a line after every block
    geed.evaluate(model, x, g, latent="latent", chunk_size=8, progress=lines.append)
    assert len(lines) == 6  # blocks of 2 samples (8 orbit inputs under C4)
    assert lines[0].startswith("[geed.evaluate] 2/12 samples,") and "samples/s" in lines[0] and "s left" in lines[0]
    assert lines[-1].startswith("[geed.evaluate] 12/12 samples,") and "done in" in lines[-1]
    geed.evaluate(model, x, g, latent="latent", chunk_size=8, progress=True)
    assert "12/12 samples" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress"):
        geed.evaluate(model, x, g, progress="yes")
    # on a clock read by hand: 25 of 100 samples in 10 s is 2.5 samples/s, with 30 s left; the end says the total
    clock = iter([0.0, 10.0, 40.0])
    monkeypatch.setattr(orbit, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))  # this module's clock only
    timed: list[str] = []
    progress = orbit.Progress(100, "samples", timed.append, every=0.0)
    progress.update(25)
    progress.update(100)
    assert timed == ["[geed.evaluate] 25/100 samples, 2.5 samples/s, about 30 s left", "[geed.evaluate] 100/100 samples, 2.5 samples/s, done in 40.0 s"]


def test_small_outputs_scored_over_several_blocks_give_the_same_values(monkeypatch):
    """Latent vectors and logits are scored a few blocks at a time; any grouping gives the values of
    the reference path, including a last, partial group."""
    from geed.data.digits import rotated_digits

    model = create_model("cnn-tiny", seed=0).eval()
    x = rotated_digits("test").subset(7, seed=0).x
    g = geed.get_group("C4", mask=True)
    kw = dict(channelwise=model.layer_actions(g), latent="latent", references=("orbit", "input"), dtype=torch.float64)
    want = evaluate_reference(model, x, g, **kw)
    for samples in (1, 3, 256):
        monkeypatch.setattr(orbit, "SMALL_SAMPLES", samples)
        _same(geed.evaluate(model, x, g, chunk_size=8, **kw), want, 1e-9)
    monkeypatch.setattr(orbit, "SMALL_BYTES", 1)  # every block on its own
    _same(geed.evaluate(model, x, g, chunk_size=8, **kw), want, 1e-9)


class _Awkward(torch.nn.Module):
    """A ReLU used twice, a module the forward skips, one whose output is not batch first."""

    def __init__(self):
        from torch import nn

        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.unused = nn.Conv2d(2, 2, 1)
        self.pixels = nn.Identity()  # sees (H W, N, C): one row per pixel, not per input
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        h = self.act(self.act(self.conv(x)) - 0.1)
        seq = self.pixels(h.flatten(2).permute(2, 0, 1))
        return self.fc(seq.mean(dim=0))


_ENTRY_POINTS = {
    "evaluate, orbit in one chunk": lambda m, x, layer: geed.evaluate(m, x, "C4", channelwise={layer: None}, chunk_size=64),
    "evaluate, orbit over chunks": lambda m, x, layer: geed.evaluate(m, x, "C4", channelwise={layer: None}, chunk_size=2),
    "evaluate_reference": lambda m, x, layer: orbit.evaluate_reference(m, x, "C4", channelwise={layer: None}, chunk_size=5),
    "forward_outputs": lambda m, x, layer: orbit.forward_outputs(m, x, [layer], chunk_size=2),
}


@pytest.mark.parametrize("entry", list(_ENTRY_POINTS))
def test_a_module_that_does_not_run_once_per_input_is_named(entry):
    """Values are grouped by input and element on the assumption that a captured module gives one
    output row per input in each forward pass: a module used twice, one the forward skips and one whose
    output is not batch first are refused with their names (not a reshape error or a wrong grouping),
    on the streaming path, the whole-orbit path and the plain forward alike."""
    run = _ENTRY_POINTS[entry]
    model, x = _Awkward().eval(), torch.rand(3, 1, 9, 9)
    for layer, what in (("act", "ran more than once"), ("unused", "did not run"), ("pixels", r"gave an output of shape \(81, \d+, 2\)")):
        with pytest.raises(orbit.ModuleRunError, match=rf"'{layer}' {what}.*exactly once"):
            run(model, x, layer)
    out = run(model, x, "conv")  # a module that runs once is measured
    if entry == "forward_outputs":
        assert out["conv"].shape == (3, 2, 9, 9)
    else:
        assert np.isfinite(out[("channelwise", "conv")].value)


def test_nothing_allocated_for_one_block_outlives_it_but_the_values_kept(monkeypatch):
    """What is kept across blocks is allocated before the first block: each block's results are
    written into it, and as many numpy arrays are alive after every block.
    (Small results kept block by block sat between the blocks' short-lived buffers, and glibc's
    heap grew with N.)"""
    import tracemalloc

    from geed.data.digits import rotated_digits

    model = create_model("cnn-tiny", seed=0).eval()
    x = rotated_digits("test").subset(12, seed=0).x
    g = geed.get_group("C4", mask=True)
    monkeypatch.setattr(orbit, "PROGRESS_EVERY_S", 0.0)  # a line after every block
    monkeypatch.setattr(orbit, "SMALL_SAMPLES", 2)  # the small outputs scored every other block
    domain = np.lib.tracemalloc_domain  # numpy's arrays
    alive = []

    def after_block(_line: str) -> None:
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, domain)])
        alive.append(len(snap.traces))

    tracemalloc.start()
    try:
        geed.evaluate(model, x, g, channelwise=model.layer_actions(g), latent="latent", chunk_size=4, progress=after_block)
    finally:
        tracemalloc.stop()
    assert len(alive) == 12  # one block per sample
    assert alive == [alive[0]] * 12, alive  # before: 66, 77, 83, ... 162


class _Signed(nn.Module):
    def forward(self, z):
        return torch.cat([z, -z], dim=1)


def test_reference_points_normalise_the_latent_layers_only():
    """M is taken over the reference points' latent vectors; their logits are not normalised, so
    logits whose mean cosine similarity is negative (outputs of either sign) are no obstacle."""
    model = nn.Sequential(nn.Flatten(), nn.Identity(), nn.Linear(81, 1), _Signed()).eval()
    with torch.no_grad():
        model[2].weight.fill_(1 / 81)
        model[2].bias.fill_(-0.5)
    x, x_ref = torch.rand(6, 1, 9, 9, generator=torch.Generator().manual_seed(0)), torch.rand(20, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    logits = model(x_ref)
    assert (logits[:, 0] > 0).any() and (logits[:, 0] < 0).any()  # the logits' own cosine M would be negative
    kw = dict(latent="1", reference_points=x_ref, references=("orbit", "input"))
    got = geed.evaluate(model, x, "C4", chunk_size=8, **kw)
    _same(got, evaluate_reference(model, x, "C4", **kw), 1e-6)


def test_an_evaluation_makes_no_tensor_from_host_data(monkeypatch):
    """No tensor is made from host data (an index, a constant) while an evaluation runs: on a GPU its
    copy to the device waits for every block queued before it, and the processor then falls behind
    the device. Checked on a CPU, with the GPU's bookkeeping, under the digit models' actions (a
    kernel of one element), the trivial action (all elements) and an induced action whose kernel is
    not a run of consecutive elements; the orbit means are those of an index made on the host. The
    CPU's compiled channelwise pass, which hands over host arrays, is left out."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from geed import _fused
    from geed.actions import InducedAction, SpatialAction
    from geed.data.digits import rotated_digits
    from geed.metrics import orbit_mean

    made: list[str] = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("lift_fresh", "lift_fresh_copy", "_to_copy") and (
                    func.overloadpacket.__name__ != "_to_copy" or (kwargs or {}).get("device") not in (None, args[0].device)):
                made.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(orbit, "_SHARED_STORE", True)
    monkeypatch.setattr(_fused, "enabled", False)  # the CPU's compiled pass hands over host arrays; a GPU's values are tensors
    model = create_model("c8cnn-tiny", seed=0).eval()
    x = rotated_digits("test").subset(6, seed=2).x
    g = geed.get_group("C8", mask=True)
    kw = dict(channelwise=model.layer_actions(g), latent="latent", references=("orbit", "input"))
    geed.evaluate(model, x, g, chunk_size=16, **kw)  # the tables and plans made once, before watching
    with Watch():
        geed.evaluate(model, x, g, chunk_size=16, **kw)
    assert made == []

    Y = torch.randn(8, 3, 4, 5, 5, dtype=torch.float64)
    c2 = geed.get_group("C2")
    induced = InducedAction(g, SpatialAction(c2), [i % 2 for i in range(8)])  # the kernel: the even elements
    for action, ker in ((induced, [0, 2, 4, 6]), (geed.actions.TrivialAction(g), list(range(8))), (SpatialAction(g), [0])):
        assert action.kernel(Y.shape[1:]) == ker
        with Watch():
            got = orbit_mean(Y, action)
        assert made == []
        assert torch.equal(got, Y[ker[0]] + (Y[ker] - Y[ker[0]]).mean(dim=0))


def test_the_normalisers_sums_are_queued_before_any_value_is_read(monkeypatch):
    """M's pairwise sums over the evaluated points are launched before the per-pair values and dead
    counts are read, and read together afterwards: on a GPU they then run behind the blocks' work, not
    after a wait for it. Checked on a CPU with the GPU's bookkeeping, by the order of the calls."""
    from geed.data.digits import rotated_digits

    events: list[str] = []
    real_total, real_tolist, real_numpy = orbit._pairwise_total, torch.Tensor.tolist, torch.Tensor.numpy
    monkeypatch.setattr(orbit, "_SHARED_STORE", True)
    monkeypatch.setattr(orbit, "_pairwise_total", lambda *a, **k: events.append("sum") or real_total(*a, **k))
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: events.append("read") or real_tolist(self))
    monkeypatch.setattr(torch.Tensor, "numpy", lambda self, *a, **k: events.append("read") or real_numpy(self, *a, **k))
    model = create_model("cnn-tiny", seed=0).eval()
    x = rotated_digits("test").subset(5, seed=3).x
    g = geed.get_group("C8", mask=True)
    got = geed.evaluate(model, x, g, channelwise=model.layer_actions(g), latent="latent", chunk_size=16)
    first = events.index("sum")
    assert events[first : first + 2] == ["sum", "sum"] and "sum" not in events[first + 2 :]  # l2 and cosine, one after the other
    assert events[first + 2 :].count("read") >= 2  # the values, then M's sums, read after
    monkeypatch.undo()
    for dist in ("l2", "cosine"):  # the same M as mean_pairwise gives on the identity's latent vectors
        Z = geed.forward_outputs(model, x, ["latent"])["latent"]
        assert got.results[(f"latent_{dist}", "latent")].meta["M"] == pytest.approx(geed.mean_pairwise(Z, dist), rel=1e-12)
