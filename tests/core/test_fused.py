"""The compiled channelwise pass (geed._fused) against the tensor path it replaces on a CPU."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import geed
from geed import _fused
from geed.actions import InducedAction, SpatialAction
from geed.metrics import channelwise_eed
from geed.models import create_model


def _both(Y, action, reference="orbit", monkeypatch=None):
    monkeypatch.setattr(_fused, "enabled", False)
    tensor = channelwise_eed(Y, action, reference=reference)
    monkeypatch.setattr(_fused, "enabled", True)
    assert _fused.supports(action, Y)
    fused = channelwise_eed(Y, action, reference=reference)
    return tensor, fused


def _orbit_like(group, channels, size, dtype, seed):
    """Near-equivariant feature maps with the cases the cosine conventions are about: a channel dead
    in every map, a channel dead in f(g x) alone, and a channel far below the others' scale."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, channels, size, size, generator=gen, dtype=torch.float64)
    Y = torch.relu(group.orbit(x) + 0.3 * torch.randn(len(group), *x.shape, generator=gen, dtype=torch.float64))
    Y[:, 0, 0] = 0.0  # dead everywhere for sample 0
    Y[1:, 1, 1] = 0.0  # dead in the transformed copies of sample 1 only (one side zero: cosine 0)
    Y[:, 2, 2] *= 1e-8  # far below the zero tolerance of float32, above that of float64
    return Y.to(dtype)


ACTIONS = {
    "C8 masked": lambda: SpatialAction(geed.get_group("C8", mask=True)),
    "C8 unmasked": lambda: SpatialAction(geed.get_group("C8")),
    "D4": lambda: SpatialAction(geed.get_group("D4")),
    "C4 masked": lambda: SpatialAction(geed.get_group("C4", mask=True)),
    "flip": lambda: SpatialAction(geed.get_group("flip")),
    "C8 -> C4": lambda: InducedAction.by_angle(geed.get_group("C8", mask=True), SpatialAction(geed.get_group("C4", mask=True))),
}
# ways of forming targets that only the CPU's pass has (the GPU kernel reads every map's taps itself)
ACTIONS_CPU = {
    **ACTIONS,
    # k -> 3k: the first element run acts as 135 degrees, a map derived from 45 degrees, which comes later
    "C8 by k -> 3k": lambda: InducedAction(geed.get_group("C8", mask=True), SpatialAction(geed.get_group("C8", mask=True)),
                                           [3 * k % 8 for k in range(8)]),
    "C16": lambda: SpatialAction(geed.get_group("C16")),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("reference", ["orbit", "input"])
@pytest.mark.parametrize("name", list(ACTIONS_CPU))
def test_same_values_as_the_tensor_path(name, reference, dtype, monkeypatch):
    action = ACTIONS_CPU[name]()
    Y = _orbit_like(action.group, 5, 13, dtype, seed=len(name))
    tensor, fused = _both(Y, action, reference, monkeypatch)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert np.array_equal(np.isnan(tensor.per_pair), np.isnan(fused.per_pair)), name
    np.testing.assert_allclose(fused.per_pair, tensor.per_pair, rtol=tol, atol=tol, err_msg=name)
    assert fused.meta == tensor.meta
    assert 0 < fused.meta["dead_fraction"] < 1


@pytest.mark.parametrize("name, size, kinds", [
    ("C8 unmasked", 13, {"IDENTITY", "ONE_PIXEL", "GATHERED", "DERIVED"}),  # 135 degrees: a quarter turn after 45
    ("C8 unmasked", 5, {"IDENTITY", "ONE_PIXEL", "GATHERED", "DERIVED"}),
    ("C8 unmasked", 1, {"IDENTITY"}),  # one pixel: every map reads it
    ("D4", 13, {"IDENTITY", "ONE_PIXEL"}),  # no element interpolates: nothing is turned
    ("flip", 6, {"IDENTITY", "ONE_PIXEL"}),
    ("C4 masked", 5, {"IDENTITY", "ONE_PIXEL"}),
    ("C16", 16, {"IDENTITY", "ONE_PIXEL", "GATHERED", "DERIVED"}),  # three rotations built, twelve derived
])
def test_each_way_of_forming_the_targets_gives_the_tensor_paths_values(name, size, kinds, monkeypatch):
    """The identity reads the reference itself, one-pixel maps (quarter turns, flips) read it through an
    index row, interpolated ones build their targets and turn them, and those that are a one-pixel map
    after another read its turned targets through an index row: each holds to the tensor path, and to
    the pass with every element built the interpolated way."""
    action = ACTIONS_CPU[name]()
    Y = _orbit_like(action.group, 5, size, torch.float32, seed=size)
    names = {getattr(_fused, k): k for k in ("IDENTITY", "ONE_PIXEL", "GATHERED", "DERIVED")}
    assert {names[k] for k in _fused._plan(action, 5, size, size)["kind"]} == kinds
    tensor, fused = _both(Y, action, "orbit", monkeypatch)
    np.testing.assert_allclose(fused.per_pair, tensor.per_pair, rtol=2e-6, atol=2e-6, err_msg=name)
    assert fused.meta == tensor.meta
    monkeypatch.setattr(_fused, "direct_reads", False)
    again = ACTIONS_CPU[name]()  # a new action: its tables are built anew
    assert set(_fused._plan(again, 5, size, size)["kind"]) == {_fused.GATHERED}
    # the same sums in another loop: with reassociation allowed, the compiler may add them in another order
    # (a last-bit difference on some processors), so equal to 1e-13, not bit for bit
    built = channelwise_eed(Y, again).per_pair
    np.testing.assert_array_equal(np.isnan(built), np.isnan(fused.per_pair))
    np.testing.assert_allclose(built, fused.per_pair, rtol=1e-13, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("rows", [1, 3, 7, 8, 19, 20, 64])
@pytest.mark.parametrize("name", ["C8 unmasked", "C8 by k -> 3k", "C16", "D4"])
def test_the_rows_may_be_taken_in_blocks_of_any_size(name, rows, monkeypatch):
    """The pass takes the (sample, channel) rows a block at a time: blocks of one row, of sizes that
    leave a remainder of the 20 rows (4 samples x 5 channels), of all of them and of more give the same
    values, and the same as the tensor path; a derived element read before its base (k -> 3k) included."""
    action = ACTIONS_CPU[name]()
    Y = _orbit_like(action.group, 5, 9, torch.float64, seed=rows)
    tensor = _both(Y, action, "orbit", monkeypatch)[0]
    want = _fused.channelwise(Y, Y[0], action)
    monkeypatch.setattr(_fused, "_rows_per_block", lambda S, itemsize: rows)
    again = ACTIONS_CPU[name]()  # a new action: its plan is made anew
    assert _fused._plan(again, 5, 9, 9)["rows"][8] == rows
    got = _fused.channelwise(Y, Y[0], again)
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want[0]))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got[0], tensor.per_pair, rtol=1e-12, atol=1e-12)
    assert got[1] == want[1] == round(tensor.meta["dead_fraction"] * Y.shape[1] * Y.shape[2] * len(action.group))


def test_a_block_holds_about_32_kb_of_each_map():
    """From 32 to 128 rows a block, a multiple of 8 (the transposes' blocks), about 32 KB of each map."""
    assert _fused._rows_per_block(25 * 25, 4) == 32  # 13.1: at least 32
    assert _fused._rows_per_block(13 * 13, 4) == 48  # 32768 / 676 = 48.5
    assert _fused._rows_per_block(13 * 13, 8) == 32  # 24.2: at least 32
    assert _fused._rows_per_block(5 * 5, 4) == 128  # 327: at most 128
    assert _fused._rows_per_block(56 * 56, 4) == 32
    assert _fused._rows_per_block(10 * 10, 4) == 80  # 81.9, down to a multiple of 8


def test_a_map_is_derived_only_where_it_is_a_one_pixel_map_after_another():
    """Under C8 the rotations by 135, 225 and 315 degrees are quarter turns after the one by 45, and
    read its targets; with one weight of 135 degrees moved by more than the tolerance, that element
    is built on its own, and the others still derive from 45 degrees."""
    action = SpatialAction(geed.get_group("C8"))
    maps = _fused._pixel_maps(action, 13, 13)
    assert maps["kind"].tolist() == [_fused.IDENTITY, _fused.GATHERED, _fused.ONE_PIXEL, _fused.DERIVED] + [
        _fused.ONE_PIXEL, _fused.DERIVED, _fused.ONE_PIXEL, _fused.DERIVED]
    assert maps["base"].tolist() == [-1, -1, -1, 1, -1, 1, -1, 1]
    # the row a derived element reads through is a quarter turn's (225 degrees: a half turn after 45)
    np.testing.assert_array_equal(maps["i1"][5], maps["idx"][4, :, 0])
    for step, kind in [(0.5 * _fused.COMPOSE_TOL, _fused.DERIVED), (10 * _fused.COMPOSE_TOL, _fused.GATHERED)]:
        wts = maps["wts"].copy()
        s, k = np.argwhere(wts[3] > 0.1)[0]
        wts[3, s, k] += step
        got = _fused._kinds(maps["idx"], wts, maps["nk"])
        assert got["kind"][3] == kind and got["kind"][[5, 7]].tolist() == [_fused.DERIVED] * 2
        assert got["base"][3] == (1 if kind == _fused.DERIVED else -1)


def test_a_pixel_of_weight_zero_gives_a_target_of_zero_whatever_it_holds(monkeypatch):
    """Outside the input mask the maps weigh the reference by zero: a NaN there (a diverged model's
    corner) leaves the targets at zero in every way of forming them, as in the interpolated way."""
    action = ACTIONS["C8 masked"]()
    Y = _orbit_like(action.group, 3, 13, torch.float32, seed=1)
    ref = Y[0].clone()
    ref[:, :, 0, 0] = float("nan")  # a corner: outside the disc
    got, dead = _fused.channelwise(Y, ref, action)
    assert np.isfinite(got).all()
    monkeypatch.setattr(_fused, "direct_reads", False)
    want, want_dead = _fused.channelwise(Y, ref, ACTIONS["C8 masked"]())
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)  # the same sums in another loop (see above)
    assert dead == want_dead


@pytest.mark.parametrize("group", ["C8", "C4"])
def test_regular_fields_of_a_steerable_model(group, monkeypatch):
    model = create_model("c8cnn-tiny", seed=0).eval()
    g = geed.get_group(group, mask=True)
    images = torch.rand(3, 1, 29, 29, generator=torch.Generator().manual_seed(0))
    actions = model.layer_actions(g)
    Y = geed.orbit_outputs(model, images, g, list(actions))
    for layer, action in actions.items():
        tensor, fused = _both(Y[layer], action, "orbit", monkeypatch)
        np.testing.assert_allclose(fused.per_pair, tensor.per_pair, rtol=2e-6, atol=2e-6, err_msg=layer)
    if group == "C4":  # exact there: the steerable model is equivariant up to rounding
        assert fused.value < -0.9999


def test_pixel_maps_are_the_groups_action():
    """Applying the stored sparse maps to an image gives the group's action, masked as compared, on
    square and oblong grids from 1 x 1 to 112 x 112."""
    grids = {"C8": [(1, 1), (2, 2), (7, 7), (112, 112)], "D4": [(7, 7), (112, 112)], "flip": [(7, 12)], "C2": [(5, 9)]}
    for group in (geed.get_group("C8", mask=True), geed.get_group("D4"), geed.get_group("flip"), geed.get_group("C2")):
        action = SpatialAction(group)
        for h, w in grids[group.name]:
            maps = _fused._pixel_maps(action, h, w)
            img = torch.randn(h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(h))
            flat = img.reshape(-1).numpy()
            region = maps["region"]
            for i in range(len(group)):
                got = (maps["wts"][i] * flat[maps["idx"][i]]).sum(axis=1)
                want = (group.act(img[None, None], i)[0, 0].reshape(-1).numpy()) * region
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
            assert maps["nk"][0] == 1  # the identity reads one pixel
            if group.name == "C8" and h > 2:
                assert maps["nk"].max() == 4  # bilinear at 45 degrees


def test_a_pixel_map_is_checked_against_the_groups_action(monkeypatch):
    """The probes read one lit pixel per output pixel only when lit pixels lie apart: lit side by
    side, a 45-degree turn mixes them, and the check refuses the map instead of storing a wrong one."""
    monkeypatch.setattr(_fused, "_PROBE_STRIDE", 1)
    with pytest.raises(ValueError, match="2 x 2 block"):
        _fused._pixel_maps(SpatialAction(geed.get_group("C8", mask=True)), 9, 9)
    _fused._probed(geed.get_group("D4"), 5, 9, 9)  # permutations read one pixel: any stride will do


def test_what_it_does_not_take_goes_the_tensor_way():
    c8 = geed.get_group("C8", mask=True)
    Y = torch.rand(8, 2, 3, 9, 9)
    n = 3
    mats = SpatialAction(c8, channel_maps=[np.linalg.qr(np.random.default_rng(i).normal(size=(n, n)))[0] for i in range(8)])
    t4 = SpatialAction(geed.get_group("T3"))
    assert not _fused.supports(mats, Y)  # a mixing matrix, not a permutation
    assert not _fused.supports(t4, torch.rand(3, 2, 3, 9, 9))  # translations have their own action
    assert not _fused.supports(SpatialAction(c8), Y.requires_grad_())
    assert not _fused.supports(SpatialAction(c8), torch.rand(8, 2, 3, 9, 9, dtype=torch.bfloat16))
    assert _fused.supports(SpatialAction(c8), torch.rand(8, 2, 3, 9, 9))
    r = channelwise_eed(torch.rand(3, 2, 3, 9, 9), t4)  # and still measured
    assert np.isfinite(r.value)


def test_without_numba_the_values_are_the_same(monkeypatch):
    action = ACTIONS["C8 masked"]()
    Y = _orbit_like(action.group, 4, 11, torch.float64, seed=3)
    with_numba = channelwise_eed(Y, action)
    monkeypatch.setattr(_fused, "numba", None)
    assert not _fused.available() and not _fused.supports(action, Y)
    np.testing.assert_allclose(channelwise_eed(Y, action).per_pair, with_numba.per_pair, rtol=1e-12, atol=1e-12)


def test_a_layer_of_the_wrong_width_is_named(monkeypatch):
    model = create_model("c8cnn-tiny", seed=0)
    action = model.layer_actions("C8")["block2"]
    Y = torch.rand(8, 2, action.n_channels + 1, 9, 9)
    for enabled in (True, False):
        monkeypatch.setattr(_fused, "enabled", enabled)
        with pytest.raises(ValueError, match="permutes"):
            channelwise_eed(Y, action)


@pytest.mark.slow
def test_thread_settings_are_left_as_they_were():
    """The pass runs on torch's thread count and leaves torch's and numba's settings as they were
    (numba's OpenMP layer shares OpenMP's setting with torch). A fresh interpreter, as a user's
    script: torch's thread count set first, numba's left at its default."""
    pytest.importorskip("numba")
    script = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "import numba, geed\n"
        "from geed.metrics import channelwise_eed\n"
        "from geed.actions import SpatialAction\n"
        "for _ in range(2):\n"
        "    channelwise_eed(torch.rand(8, 2, 3, 9, 9), SpatialAction(geed.get_group('C8', mask=True)))\n"
        "print(torch.get_num_threads(), numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["1", "True"]


@pytest.mark.parametrize("shape", [(1, 1), (7, 9), (8, 8), (17, 24), (24, 17), (40, 3)])
def test_the_block_transpose_moves_every_value_once(shape):
    """The transpose of the compiled pass works in 8 x 8 blocks: shapes with and without whole blocks."""
    pytest.importorskip("numba")
    A = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    B = np.full(shape[::-1], -1.0, dtype=np.float32)
    _fused._transpose(A, B)
    np.testing.assert_array_equal(B, A.T)


_CACHE_PROBE = """
import torch, geed
from geed import _fused
from geed.actions import SpatialAction
action = SpatialAction(geed.get_group("C8", mask=True))
Y = torch.rand(8, 1, 2, 5, 5)
torch.set_num_threads(2)
_fused.channelwise(Y, Y[0].clone(), action)  # the parallel build: compiled, and saved to the empty cache
torch.set_num_threads(1)
_fused.channelwise(Y, Y[0].clone(), action)  # the serial build: must be compiled, not the parallel entry loaded
print(len(_fused._PASSES[False].stats.cache_hits), len(_fused._PASSES[False].stats.cache_misses))
"""


@pytest.mark.slow
def test_the_serial_build_is_not_read_from_the_parallel_builds_cache_entry(tmp_path):
    """numba keys its disk cache by function name and argument types, not by compiler options
    (numba issue 6845): two builds of one function shared an entry, and the one compiled first ran as
    both. In a fresh cache, the serial build compiled after the parallel one is compiled, not loaded."""
    pytest.importorskip("numba")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_NUM_THREADS": "2"}  # two threads on any machine: the parallel build runs
    done = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1"], done.stdout  # no hit, one miss


@pytest.mark.parametrize("threads", [1, 2])
def test_serial_and_parallel_builds_give_the_tensor_paths_values(threads, monkeypatch):
    """One thread runs the serial build of the pass, more run the parallel one: both hold to the
    tensor path, on grids and widths with partial 8 x 8 blocks."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name in ("C8 masked", "D4"):
            action = ACTIONS[name]()
            Y = _orbit_like(action.group, 7, 11, torch.float32, seed=threads)
            tensor, fused = _both(Y, action, "orbit", monkeypatch)
            np.testing.assert_allclose(fused.per_pair, tensor.per_pair, rtol=2e-6, atol=2e-6, err_msg=name)
            assert fused.meta == tensor.meta
    finally:
        torch.set_num_threads(previous)
