"""The on-disk cache of generated kernels.

An entry is a folder ``<cache>/<key>/`` holding ``kernel.py`` (the generated source),
``layout.npz`` (the buffers and counts a launch needs) and ``meta.json`` (checksums of both).
The key hashes everything that changes the output: the mask, the values when baked in, the
plan, the signature, the epilogue, the device capability and the versions of triton, torch
and this package. Writes are atomic (a temporary folder renamed into place); an entry whose
checksums do not match is deleted and rebuilt. Triton's own binaries for these kernels go to
``<cache>/triton``. The cache folder is ``$SPARSERT_CACHE_DIR`` or ``~/.cache/sparsert-triton``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np


stats = {"hits": 0, "misses": 0, "corrupt": 0}


def cache_dir() -> Path:
    d = os.environ.get("SPARSERT_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "sparsert-triton")
    p = Path(d)
    p.mkdir(parents=True, exist_ok=True)
    return p


def triton_cache_dir() -> Path:
    p = cache_dir() / "triton"
    p.mkdir(parents=True, exist_ok=True)
    return p


def versions() -> dict:
    import torch
    import triton
    from . import __version__
    return {"triton": triton.__version__, "torch": torch.__version__, "sparsert": __version__}


def make_key(**parts) -> str:
    blob = json.dumps({**parts, "versions": versions()}, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store(key: str, source: str, layout: dict) -> Path:
    """Write an entry atomically; if another process already wrote it, keep theirs."""
    root = cache_dir()
    final = root / key
    buf = io.BytesIO()
    np.savez(buf, **layout)
    blobs = {"kernel.py": source.encode(), "layout.npz": buf.getvalue()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        for name, data in blobs.items():
            (tmp / name).write_bytes(data)
        (tmp / "meta.json").write_text(json.dumps({n: _sha(d) for n, d in blobs.items()}))
        try:
            os.replace(tmp, final)
        except OSError:     # a concurrent writer won the race: its entry is equivalent
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def load(key: str) -> Optional[Tuple[Path, dict]]:
    """Return (kernel path, layout) of a valid entry, or None (a corrupt entry is removed)."""
    entry = cache_dir() / key
    if not entry.is_dir():
        stats["misses"] += 1
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        blobs = {n: (entry / n).read_bytes() for n in ("kernel.py", "layout.npz")}
        if any(_sha(blobs[n]) != meta.get(n) for n in blobs):
            raise ValueError("checksum mismatch")
        with np.load(io.BytesIO(blobs["layout.npz"])) as z:
            layout = {k: z[k] for k in z.files}
        stats["hits"] += 1
        return entry / "kernel.py", layout
    except Exception:
        stats["corrupt"] += 1
        shutil.rmtree(entry, ignore_errors=True)
        return None


def entries():
    """(key, size in bytes, first line of the program comment) for every entry."""
    out = []
    for e in sorted(cache_dir().iterdir()):
        if e.is_dir() and (e / "meta.json").exists():
            size = sum(f.stat().st_size for f in e.iterdir())
            head = (e / "kernel.py").read_text().splitlines()[1] if (e / "kernel.py").exists() else ""
            out.append((e.name, size, head.lstrip("# ")))
    return out


def clear() -> int:
    n = 0
    for e in cache_dir().iterdir():
        shutil.rmtree(e, ignore_errors=True) if e.is_dir() else e.unlink()
        n += 1
    return n
