import warnings

import numpy as np
import pytest

from geed.report import claims
from geed.report.cache import CacheCorruptionWarning, ResultCache


def test_cache_roundtrip_and_key_changes(tmp_path):
    cache = ResultCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3)}

    v1, hit1 = cache.get_or_compute("exp", {"n": 1}, compute)
    v2, hit2 = cache.get_or_compute("exp", {"n": 1}, compute)
    v3, hit3 = cache.get_or_compute("exp", {"n": 2}, compute)
    assert (hit1, hit2, hit3) == (False, True, False)
    assert len(calls) == 2 and np.array_equal(v2["a"], np.arange(3))
    assert cache.key("exp", {"n": 1}, data=np.ones(2)) != cache.key("exp", {"n": 1}, data=np.zeros(2))
    assert cache.key("exp", {"n": 1}, data=np.ones(2)) != cache.key("exp", {"n": 1}, data=np.ones((1, 2)))


def test_a_result_of_other_code_is_never_reused(tmp_path, monkeypatch):
    """The key holds the version of the code: a result computed before a change to geed is recomputed after it."""
    from geed.report import cache as cache_module

    cache = ResultCache(tmp_path)
    calls = []
    cache.get_or_compute("exp", {"n": 1}, lambda: calls.append(1) or 1)
    monkeypatch.setattr(cache_module, "code_version", lambda: "another-version")
    _, hit = cache.get_or_compute("exp", {"n": 1}, lambda: calls.append(1) or 1)
    assert not hit and len(calls) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "flip_byte_in_data", "garbage"])
def test_corrupt_cache_entry_is_reported_and_recomputed(tmp_path, damage):
    """A damaged entry is recomputed, never read. A flipped bit inside an array's data still unpickles,
    into wrong numbers: only the checksum tells."""
    cache = ResultCache(tmp_path)
    cache.get_or_compute("exp", {"n": 1}, lambda: np.arange(1000.0))
    path = cache.path(cache.key("exp", {"n": 1}))
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_byte":
        path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    elif damage == "flip_byte_in_data":
        mid = len(raw) // 2
        path.write_bytes(raw[:mid] + bytes([raw[mid] ^ 0x01]) + raw[mid + 1 :])
    else:
        path.write_bytes(b"not a cache file")
    with pytest.warns(CacheCorruptionWarning, match="checksum mismatch"):  # (the folder's name holds "corrupt")
        value, hit = cache.get_or_compute("exp", {"n": 1}, lambda: ["fresh"])
    assert (value, hit) == (["fresh"], False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get_or_compute("exp", {"n": 1}, lambda: ["again"]) == (["fresh"], True)


def test_compare_verdicts():
    rng = np.random.default_rng(0)
    big, small = rng.normal(5, 0.1, 10), rng.normal(1, 0.1, 10)
    assert claims.compare(big, small, "a", "b").verdict == claims.HOLDS
    assert claims.compare(small, big, "a", "b").verdict == claims.FAILS
    same = rng.normal(1, 1, 10)
    assert claims.compare(same, same + rng.normal(0, 0.01, 10), "a", "b").verdict == claims.INCONCLUSIVE
    assert claims.compare(big, small, "a", "b", across="samples").verdict == claims.HOLDS
    assert claims.compare([1.0], [0.0], "a", "b").verdict == claims.NOT_TESTED  # one model each: no spread, no verdict
    paired = claims.compare(big, big - 0.5 + rng.normal(0, 0.01, 10), "a", "b", across="paired")
    assert paired.verdict == claims.HOLDS and "paired" in paired.figures


def test_near_zero_exceeds_all_of():
    z = claims.near_zero([1e-13, -1e-14], 1e-12, "x")
    assert z.verdict == claims.HOLDS
    assert claims.near_zero([1e-3], 1e-12, "x").verdict == claims.FAILS
    assert claims.exceeds([0.5, 0.2], 0.1, "y").verdict == claims.HOLDS
    assert claims.all_of([z, claims.exceeds([0.05], 0.1, "y")]).verdict == claims.FAILS


def test_effective_rank_counts_the_directions_the_points_vary_along():
    """Points on a line away from the origin vary along one direction (the offset is not a direction
    of variation); four points at +-e1, +-e2 along two equally; a collapsed set along none."""
    t = np.linspace(-1.0, 1.0, 5)
    assert claims.effective_rank(np.stack([3.0 + t, np.full(5, 2.0)], axis=1)) == pytest.approx(1.0, abs=1e-12)
    assert claims.effective_rank(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])) == pytest.approx(2.0, abs=1e-12)
    assert claims.effective_rank(np.ones((4, 3))) == 0.0


def test_record_and_load(tmp_path, monkeypatch):
    monkeypatch.setenv("GEED_BUILD_DIR", str(tmp_path))
    v = claims.near_zero([0.0], 1e-12, "x")
    claims.record("chap", "C-1", "Sec. 1", "x is zero", v)
    claims.record("chap", "C-1", "Sec. 1", "x is zero (again)", v)
    claims.record("other", "O-1", "Sec. 2", "y", v)
    from geed.report import paths

    assert claims.load_all(["other", "chap"]).empty  # recorded claims are staged, never published by a chapter itself
    df = claims.load_all(["other", "chap"], paths.staging_claims_dir())
    assert list(df["id"]) == ["O-1", "C-1"] and df.iloc[1]["claim"] == "x is zero (again)"
    with pytest.raises(ValueError, match="unknown verdict"):
        claims.record("chap", "C-2", "s", "c", claims.Verdict("maybe", "", ""))


def test_the_code_version_covers_the_whole_package(tmp_path):
    """A change in the measuring code (not only in the book's pipeline) gives cached results new keys."""
    import shutil
    from pathlib import Path

    import geed
    from geed.report.cache import code_version, source_hash

    pkg = Path(geed.__file__).resolve().parent
    assert code_version() == source_hash(pkg)
    copy = tmp_path / "geed"
    shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert source_hash(copy) == code_version()
    (copy / "orbit.py").write_text((copy / "orbit.py").read_text() + "\n# a change\n")
    assert source_hash(copy) != code_version()
