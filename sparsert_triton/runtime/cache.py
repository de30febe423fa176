"""The on-disk cache of generated kernels.

An entry is a folder ``<cache>/<key>/`` holding ``kernel.py`` (the generated source),
``layout.npz`` (the buffers and counts a launch needs) and ``meta.json`` (checksums of both).
The key hashes everything that changes the output: the mask, the values when baked in, the
plan, the signature, the epilogue, the device capability and the versions of triton, torch
and this package (with a digest of its source files). Writes are atomic (a temporary folder renamed into place); an entry whose
checksums do not match is deleted and rebuilt. Triton's own binaries for these kernels go to
``<cache>/triton``. The cache folder is ``$SPARSERT_CACHE_DIR`` or ``~/.cache/sparsert-triton``.

Damage is repaired, not reported: anything else where an entry folder (or ``triton``) should
be is removed and rebuilt. A cache that refuses writes (read-only) still serves its entries;
what it cannot store goes to a private temporary folder for the rest of the process, with a
warning naming ``SPARSERT_CACHE_DIR``. A configured path that is not a folder is an error.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Tuple

import numpy as np


stats = {"hits": 0, "misses": 0, "corrupt": 0}
_fallbacks = {}     # configured folder -> the temporary folder that takes its writes


def configured_dir() -> Path:
    """``$SPARSERT_CACHE_DIR``, else ``$XDG_CACHE_HOME/sparsert-triton`` (or ``~/.cache/...``)."""
    d = os.environ.get("SPARSERT_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "sparsert-triton")
    return Path(d)


def cache_dir() -> Path:
    """The folder new entries go to: the configured one (created if missing), or the
    temporary folder that replaced it after it refused a write."""
    p = configured_dir()
    if p in _fallbacks:
        return _fallbacks[p]
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"the kernel cache {p} is not a folder: set SPARSERT_CACHE_DIR "
                                 "to a folder (it is created if missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if not _refused(e):
            raise
        return _fall_back(p, e)
    return p


def roots():
    """Folders to look for an entry in: the configured one, then its fallback if any."""
    p = configured_dir()
    return [p] + ([_fallbacks[p]] if p in _fallbacks else [])


def _refused(e: OSError) -> bool:
    return isinstance(e, PermissionError) or e.errno == errno.EROFS


def _fall_back(configured: Path, e: OSError) -> Path:
    """Send this process's writes to a temporary folder (removed at exit), with a warning."""
    tmp = Path(tempfile.mkdtemp(prefix="sparsert-cache-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    _fallbacks[configured] = tmp
    warnings.warn(f"the kernel cache {configured} refuses writes ({e.strerror or e}); kernels "
                  f"built by this process go to {tmp} and are lost at exit. Set "
                  "SPARSERT_CACHE_DIR to a writable folder to keep them.", stacklevel=3)
    return tmp


def _clear_the_way(path: Path):
    """Remove a file (or link) where a folder of ours should be."""
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        path.unlink()


def subdir(name: str) -> Path:
    """``<cache>/<name>``, created (Triton's binaries, tuned plans); a file in its place is
    removed; under a cache that refuses writes, the fallback's."""
    for _ in range(2):
        root = cache_dir()
        p = root / name
        try:
            _clear_the_way(p)
            p.mkdir(exist_ok=True)
            return p
        except OSError as e:
            if not _refused(e) or root != configured_dir():
                raise
            _fall_back(root, e)
    raise AssertionError("unreachable")


def triton_cache_dir() -> Path:
    return subdir("triton")


def write_file(folder: str, name: str, data: bytes) -> Path:
    """Write ``<cache>/<folder>/<name>`` atomically (a temporary file renamed into place);
    a cache that refuses the write hands it to the temporary fallback."""
    for _ in range(2):
        d = subdir(folder)
        tmp = d / f".{name}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, d / name)
            return d / name
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not _refused(e) or d.parent != configured_dir():
                raise
            _fall_back(d.parent, e)
    raise AssertionError("unreachable")


def source_files() -> list:
    """Every source file of this package (its subpackages included: the compiler's stages,
    the renderers, the runtime) and of the DSL, as (name, path), the name relative to the
    folder above the package (``sparsert_triton/compiler/render/table.py``)."""
    import dsl
    out = []
    for root in (Path(__file__).resolve().parents[1], Path(dsl.__file__).resolve().parent):
        out += [(f.relative_to(root.parent).as_posix(), f) for f in root.rglob("*.py")]
    return sorted(out)


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    """A hash of :func:`source_files` (names and contents): a generator changed in place (a
    checkout between releases) never serves kernels generated by its older self."""
    h = hashlib.sha256()
    for name, f in source_files():
        h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def versions() -> dict:
    import torch
    import triton
    from .. import __version__
    return {"triton": triton.__version__, "torch": torch.__version__, "sparsert": __version__,
            "code": code_digest()}


def make_key(**parts) -> str:
    blob = json.dumps({**parts, "versions": versions()}, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store(key: str, source: str, layout: dict) -> Path:
    """Write an entry atomically; if another process already wrote it, keep theirs. A cache
    that refuses the write hands it to the temporary fallback (:func:`cache_dir`)."""
    buf = io.BytesIO()
    np.savez(buf, **layout)
    blobs = {"kernel.py": source.encode(), "layout.npz": buf.getvalue()}
    root = cache_dir()
    try:
        return _store_in(root, key, blobs)
    except OSError as e:
        if not _refused(e) or root != configured_dir():
            raise
        return _store_in(_fall_back(root, e), key, blobs)


def _store_in(root: Path, key: str, blobs: dict) -> Path:
    final = root / key
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        for name, data in blobs.items():
            (tmp / name).write_bytes(data)
        (tmp / "meta.json").write_text(json.dumps({n: _sha(d) for n, d in blobs.items()}))
        try:
            os.replace(tmp, final)
        except OSError:
            if final.is_dir():    # a concurrent writer won the race: its entry is equivalent
                return final
            _clear_the_way(final)     # something else in the way: replace it
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def load(key: str) -> Optional[Tuple[Path, dict]]:
    """Return (kernel path, layout) of a valid entry, or None (a corrupt entry, or anything
    else in an entry's place, is removed)."""
    for root in roots():
        entry = root / key
        if entry.is_dir():
            return _load_entry(entry)
        if entry.exists() or entry.is_symlink():
            stats["corrupt"] += 1
            try:
                entry.unlink()
            except OSError:      # a read-only cache: the next store goes to the fallback
                pass
            return None
    stats["misses"] += 1
    return None


def _load_entry(entry: Path) -> Optional[Tuple[Path, dict]]:
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
