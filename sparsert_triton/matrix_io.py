"""Read a weight matrix for the command line: a DLMC pattern, a dense ``.npy`` array or a
tensor / state_dict in a ``.pt`` file (see ``sparsert_triton.cli``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

MATRIX_SUFFIXES = (".smtx", ".smtx.gz", ".npy", ".pt", ".pth")
DTYPES = ("float32", "float16", "bfloat16")


class CliError(Exception):
    """Bad input: reported as one line, exit status 2."""


@dataclass
class Matrix:
    """A loaded matrix: the weight (CSR, float32 unless asked otherwise) and where it came from."""
    weight: object          # SparseWeight
    path: Path
    description: str
    values_drawn: bool      # True when the file holds only a pattern


def suffix(path: Path) -> str:
    name = path.name.lower()
    for s in MATRIX_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower() or "(none)"


def _weight_from_mask_values(mask: np.ndarray, values: np.ndarray, dtype: str):
    from .weights import from_csr_arrays
    rows, cols = np.nonzero(mask)
    indptr = np.zeros(mask.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=mask.shape[0]), out=indptr[1:])
    return from_csr_arrays(mask.shape[0], mask.shape[1], indptr, cols, values[rows, cols]
                           if values.ndim == 2 else values, dtype)


def _round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """Values as the weight dtype holds them (so the baselines and our kernel agree)."""
    import torch
    from .weights import TORCH_DTYPES
    return torch.from_numpy(np.asarray(values, np.float64)).to(TORCH_DTYPES[dtype]).double().numpy()


def _drawn_values(nnz: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(nnz)


def _flatten_note(shape) -> str:
    if len(shape) == 2:
        return ""
    return f" (shape {'x'.join(map(str, shape))} flattened to {shape[0]} x {int(np.prod(shape[1:]))})"


def _state_dict_items(obj, prefix=""):
    """(dotted name, tensor) of every tensor in a (possibly nested) dict."""
    import torch
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            yield name, v
        elif isinstance(v, dict):
            yield from _state_dict_items(v, name + ".")


def _load_pt(path: Path, layer: Optional[str]):
    """A 2-D tensor (or a flattened conv weight) and its description from a .pt file."""
    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch raises several types for a bad or unsafe pickle
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CliError(f"{path}: cannot load as a tensor or state_dict (weights_only): {first}") \
            from None
    if isinstance(obj, torch.Tensor):
        if layer is not None:
            raise CliError(f"{path} holds a single tensor; --layer {layer!r} does not apply")
        t, what = obj, "tensor"
    elif isinstance(obj, dict):
        items = dict(_state_dict_items(obj))
        weights = [n for n, t in items.items() if t.dim() >= 2 and t.is_floating_point()]
        if layer is None:
            if len(weights) != 1:
                listed = ", ".join(weights[:8]) + (", ..." if len(weights) > 8 else "")
                raise CliError(f"{path} is a state_dict: choose a weight with --layer NAME "
                               f"(2-D or conv weights: {listed or 'none'})")
            layer = weights[0]
        name = layer if layer in items else f"{layer}.weight"
        if name not in items:
            listed = ", ".join(weights[:8]) + (", ..." if len(weights) > 8 else "")
            raise CliError(f"{path}: no layer {layer!r}; 2-D or conv weights: {listed or 'none'}")
        t, what = items[name], f"state_dict entry {name!r}"
    else:
        raise CliError(f"{path}: holds a {type(obj).__name__}; expected a tensor or a state_dict")
    if t.dim() < 2:
        raise CliError(f"{path}: {what} has shape {tuple(t.shape)}; a weight needs 2 dimensions "
                       "(or a conv weight C_out x C_in x ...)")
    if not (t.is_floating_point() or t.dtype == torch.bool) and not t.is_sparse:
        raise CliError(f"{path}: {what} has dtype {t.dtype}; expected a floating or bool tensor")
    if t.layout != torch.strided:
        t = t.to_dense()
    desc = what + _flatten_note(tuple(t.shape))
    return t.reshape(t.shape[0], -1), desc


def load_matrix(path, layer: Optional[str] = None, seed: int = 0,
                dtype: str = "float32") -> Matrix:
    """Read a matrix file into a :class:`Matrix` (see the module docstring for formats).

    Pattern files (``.smtx``, boolean arrays) get values from ``N(0, 1)`` with ``seed``;
    values are rounded to ``dtype``."""
    path = Path(path)
    if not path.exists():
        raise CliError(f"{path}: no such file")
    if path.is_dir():
        raise CliError(f"{path} is a directory; expected a matrix file")
    kind = suffix(path)
    if kind not in MATRIX_SUFFIXES:
        raise CliError(f"{path}: unknown format {kind!r}; expected one of "
                       f"{', '.join(MATRIX_SUFFIXES)}")
    if layer is not None and kind not in (".pt", ".pth"):
        raise CliError(f"--layer applies to .pt/.pth files, not {kind}")
    from .weights import from_csr_arrays
    if kind in (".smtx", ".smtx.gz"):
        from .dlmc import read_smtx
        try:
            p = read_smtx(path)
        except (ValueError, OSError, EOFError, UnicodeDecodeError) as e:
            raise CliError(f"{path}: not a valid .smtx file: {str(e).replace(str(path) + ': ', '')}") \
                from None
        vals = _round_to(_drawn_values(p.nnz, seed), dtype)
        w = from_csr_arrays(p.M, p.K, p.indptr, p.indices, vals, dtype)
        return Matrix(w, path, f"DLMC pattern, values ~ N(0, 1) (seed {seed})", True)
    if kind == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CliError(f"{path}: not a readable .npy array: {e}") from None
        if a.ndim != 2:
            raise CliError(f"{path}: array has shape {a.shape}; expected a 2-D matrix")
        if a.dtype == bool:
            mask, drawn = a, True
            vals = _drawn_values(int(a.sum()), seed)
        elif np.issubdtype(a.dtype, np.number) and not np.iscomplexobj(a):
            mask, drawn, vals = a != 0, False, a.astype(np.float64)
        else:
            raise CliError(f"{path}: array dtype {a.dtype} is not numeric or bool")
        w = _weight_from_mask_values(mask, _round_to(vals, dtype), dtype)
        what = f"boolean mask, values ~ N(0, 1) (seed {seed})" if drawn else f"dense {a.dtype} array"
        return Matrix(w, path, what, drawn)
    t, what = _load_pt(path, layer)
    import torch
    a = t.detach().cpu()
    if a.dtype == torch.bool:
        mask = a.numpy()
        vals = _drawn_values(int(mask.sum()), seed)
        what += f", boolean mask, values ~ N(0, 1) (seed {seed})"
        drawn = True
    else:
        a = a.double().numpy()
        mask, vals, drawn = a != 0, a, False
    try:
        w = _weight_from_mask_values(mask, _round_to(vals, dtype), dtype)
    except ValueError as e:
        raise CliError(f"{path}: {e}") from None
    return Matrix(w, path, what, drawn)


# ------------------------------------------------------------------ inspect
