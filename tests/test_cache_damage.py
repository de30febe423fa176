"""The kernel cache when its folder is damaged or read-only: a file where an entry folder
should be is replaced, a file named ``triton`` does not stop a call, and a cache that refuses
writes sends new entries to a private temporary folder with a warning naming
SPARSERT_CACHE_DIR (or names that variable when the configured path is unusable)."""
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.runtime import cache


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(root))
    return root


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(6, 5, generator=g) * (torch.rand(6, 5, generator=g) < 0.5)
    X = torch.randn(5, 3, generator=g)
    return W, X


def _kernel(W):
    return sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode="values",
                                                                block_n=16)).specialize(W)


def _check(k, X):
    torch.testing.assert_close(k(X).double(), k.reference(X), rtol=1e-5, atol=1e-5)


def test_a_file_where_the_entry_folder_should_be_is_rebuilt(fresh_cache):
    W, X = _problem()
    k = _kernel(W)
    k(X)
    entry = Path(k._last.path).parent
    for f in entry.iterdir():
        f.unlink()
    entry.rmdir()
    entry.write_text("not a cache entry")
    corrupt = cache.stats["corrupt"]
    k2 = _kernel(W)                        # a new kernel object: no in-memory variant
    _check(k2, X)
    assert cache.stats["corrupt"] == corrupt + 1
    assert entry.is_dir() and (entry / "kernel.py").is_file()


def test_store_replaces_a_file_in_the_way(fresh_cache):
    (fresh_cache / ("f" * 32)).write_text("junk")
    final = cache.store("f" * 32, "# kernel\n", {"a": np.arange(3)})
    assert final.is_dir() and (final / "kernel.py").read_text() == "# kernel\n"
    path, layout = cache.load("f" * 32)
    assert np.array_equal(layout["a"], np.arange(3))


def test_a_file_named_triton_in_the_cache_does_not_stop_a_call(fresh_cache):
    (fresh_cache / "triton").write_text("a stray file")
    W, X = _problem(1)
    _check(_kernel(W), X)
    assert cache.triton_cache_dir().is_dir()       # replaced where Triton's binaries go


def _refuse_writes_under(root: Path, monkeypatch):
    """Make ``root`` refuse new files, as a read-only mount would (root ignores modes)."""
    real = tempfile.mkdtemp

    def mkdtemp(*args, dir=None, **kw):
        if dir is not None and Path(dir).resolve().is_relative_to(root.resolve()):
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*args, dir=dir, **kw)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    os.chmod(root, 0o555)


def test_a_read_only_cache_serves_its_entries_and_builds_elsewhere(fresh_cache, monkeypatch):
    W, X = _problem(2)
    k = _kernel(W)
    k(X)                                      # an entry in the cache, before it turns read-only
    old_entry = Path(k._last.path).parent
    try:
        _refuse_writes_under(fresh_cache, monkeypatch)
        hits = cache.stats["hits"]
        _check(_kernel(W), X)                 # served from the read-only cache
        assert cache.stats["hits"] == hits + 1
        W2, _ = _problem(3)
        k2 = _kernel(W2)
        with pytest.warns(UserWarning, match="SPARSERT_CACHE_DIR"):
            _check(k2, X)                     # a miss: built in the temporary fallback
        assert not Path(k2._last.path).is_relative_to(fresh_cache)
        assert cache.load(k2._last.key) is not None      # and found there again
        assert cache.load(old_entry.name) is not None
    finally:
        os.chmod(fresh_cache, 0o755)


def test_a_cache_path_that_is_a_file_is_named(tmp_path, monkeypatch):
    f = tmp_path / "cachefile"
    f.write_text("")
    monkeypatch.setenv("SPARSERT_CACHE_DIR", str(f))
    with pytest.raises(NotADirectoryError, match="SPARSERT_CACHE_DIR"):
        cache.cache_dir()


def test_tuned_plans_are_stored_in_the_fallback_of_a_read_only_cache(fresh_cache, monkeypatch):
    real = cache.Path.write_bytes

    def write_bytes(self, data):
        if self.resolve().is_relative_to(fresh_cache.resolve()):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, data)
    cache.subdir("tuned")
    monkeypatch.setattr(cache.Path, "write_bytes", write_bytes)
    with pytest.warns(UserWarning, match="SPARSERT_CACHE_DIR"):
        path = cache.write_file("tuned", "k.json", b"{}")
    assert path.read_bytes() == b"{}" and not path.is_relative_to(fresh_cache)
    assert cache.subdir("tuned") == path.parent         # later writes go there at once
