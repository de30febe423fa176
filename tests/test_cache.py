"""The kernel cache: keys, reuse across processes, corruption, atomic writes."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.runtime import cache

SCRIPT = """
import os, sys, json
os.environ["TRITON_INTERPRET"] = "1"
import torch
from dsl import Schedule
from sparsert_triton import sparse_kernel
from sparsert_triton.runtime import cache
g = torch.Generator().manual_seed(1)
W = torch.randn(12, 10, generator=g) * (torch.rand(12, 10, generator=g) < 0.3)
k = sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode=sys.argv[1], block_n=16)).specialize(W)
X = torch.randn(10, 5, generator=g)
err = (k(X).double() - k.reference(X)).abs().max().item()
print(json.dumps({"stats": cache.stats, "err": err}))
"""


def _run(mode, env):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_reuses_the_entry(tmp_path):
    env = dict(os.environ, SPARSERT_CACHE_DIR=str(tmp_path))
    first = _run("values", env)
    entries = sorted(p.name for p in tmp_path.iterdir() if p.name != "triton")
    second = _run("values", env)
    assert first["stats"]["misses"] == 1 and first["stats"]["hits"] == 0
    assert second["stats"]["hits"] == 1 and second["stats"]["misses"] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "triton") == entries
    assert first["err"] < 1e-5 and second["err"] < 1e-5


def _kernel(mode, W):
    return sparse_kernel(lambda W, X: W @ X, schedule=Schedule(mode=mode, block_n=16)).specialize(W)


def test_corrupt_entry_is_rebuilt():
    W = torch.randn(8, 8) * (torch.rand(8, 8) < 0.5)
    X = torch.randn(8, 4)
    k = _kernel("values", W)
    k(X)
    src = Path(k._last.path)
    src.write_text(src.read_text().replace("tl.load", "tl.lod"))   # corrupt it
    before = dict(cache.stats)
    k2 = _kernel("values", W)
    Y = k2(X)
    assert cache.stats["corrupt"] == before["corrupt"] + 1
    assert "tl.lod" not in Path(k2._last.path).read_text()
    torch.testing.assert_close(Y.double(), k2.reference(X), rtol=1e-5, atol=1e-5)


def test_key_covers_values_only_when_baked():
    W = torch.randn(8, 8) * (torch.rand(8, 8) < 0.5)
    X = torch.randn(8, 4)
    keys = {}
    for mode in ("values", "indices", "table"):
        a, b = _kernel(mode, W), _kernel(mode, W * 3)
        a(X), b(X)
        keys[mode] = (a._last.key, b._last.key)
    assert keys["values"][0] != keys["values"][1]
    assert keys["indices"][0] == keys["indices"][1]
    assert keys["table"][0] == keys["table"][1]
    # a different mask is a different kernel
    W2 = W.clone()
    W2[0, 0] = 0 if W2[0, 0] != 0 else 1.0
    c = _kernel("indices", W2)
    c(X)
    assert c._last.key != keys["indices"][0]


def test_concurrent_writers_leave_one_valid_entry():
    layout = {"a": np.arange(5)}
    threads = [threading.Thread(target=cache.store, args=("k" * 32, f"# v{i}\n", layout))
               for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    path, got = cache.load("k" * 32)
    assert path.read_text().startswith("# v") and np.array_equal(got["a"], layout["a"])
    assert not [p for p in cache.cache_dir().iterdir() if p.name.startswith(".k")]


def test_key_follows_the_generator_source(monkeypatch):
    """Editing the generator (same version number) must not serve its older kernels."""
    digest = cache.code_digest()
    assert len(digest) == 16 and int(digest, 16) >= 0
    before = cache.make_key(mask="m", plan={"mode": "table"})
    assert cache.make_key(mask="m", plan={"mode": "table"}) == before
    monkeypatch.setattr(cache, "code_digest", lambda: "edited")
    assert cache.make_key(mask="m", plan={"mode": "table"}) != before


def test_the_digest_covers_every_subpackage():
    """The generator lives in subpackages (compiler/, compiler/render/, runtime/): each of
    their files enters the digest, under a name that keeps two same-named files apart."""
    names = [name for name, _ in cache.source_files()]
    for f in ("sparsert_triton/compiler/render/table.py", "sparsert_triton/compiler/lower.py",
              "sparsert_triton/runtime/launch.py", "sparsert_triton/api.py", "dsl/ir.py"):
        assert f in names
    assert "sparsert_triton/compiler/blocks.py" in names and \
        "sparsert_triton/compiler/render/blocks.py" in names
