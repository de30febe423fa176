"""Normalise a user's weight into the host-side sparse form every later stage reads.

Accepted: a dense 2-D tensor whose zeros are the mask; a torch sparse CSR or COO tensor; a
``scipy.sparse`` matrix; or a ``(mask, values)`` pair where ``values`` is dense (M x K) or a
1-D tensor of the nonzeros in row-major order of ``mask``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

WEIGHT_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                 torch.float64: "float64"}
TORCH_DTYPES = {v: k for k, v in WEIGHT_DTYPES.items()}


@dataclass(frozen=True, eq=False)
class SparseWeight:
    """W (M x K) as CSR on the host. ``values`` are float64 (exact for every weight dtype)."""
    M: int
    K: int
    indptr: np.ndarray     # int64, M + 1
    indices: np.ndarray    # int64, nnz, sorted within each row
    values: np.ndarray     # float64, nnz
    dtype: str             # the weight's own dtype
    device: torch.device = field(default=torch.device("cpu"))
    #: digests computed once per weight (its arrays are never changed after construction;
    #: hashing 20 M nonzeros takes ~0.2 s, and the tuner asks for it per candidate)
    _digests: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def row_nnz(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.M * self.K)

    def mask_digest(self) -> str:
        if "mask" not in self._digests:
            self._digests["mask"] = csr_digest(self.M, self.K, self.indptr, self.indices)
        return self._digests["mask"]

    def values_digest(self) -> str:
        if "values" not in self._digests:
            self._digests["values"] = hashlib.sha256(
                self.values.astype(np.float64).tobytes() + self.dtype.encode()).hexdigest()
        return self._digests["values"]

    def to_dense(self, dtype=torch.float64) -> torch.Tensor:
        """The masked dense weight (for references and tests)."""
        out = torch.zeros(self.M, self.K, dtype=dtype, device="cpu")
        rows = np.repeat(np.arange(self.M), self.row_nnz)
        out[torch.from_numpy(rows), torch.from_numpy(self.indices)] = torch.from_numpy(
            self.values.astype(np.float64)).to(dtype)
        return out

    def with_values(self, values) -> "SparseWeight":
        """Same mask, new nonzero values (1-D, in CSR order). A torch tensor brings its dtype
        (the kernel follows it); a numpy array keeps this weight's dtype (so
        ``w.with_values(w.values)``, the float64 CSR values, stays an fp16 weight rather than
        silently making float64 kernels), its values rounded to that dtype."""
        v = _as_tensor(values, "values").reshape(-1)
        if v.numel() != self.nnz:
            raise ValueError(f"values has {v.numel()} entries but the mask has {self.nnz} nonzeros")
        if not isinstance(values, torch.Tensor):
            v = v.to(TORCH_DTYPES[self.dtype])
        out = SparseWeight(self.M, self.K, self.indptr, self.indices, _check_values(v, "values"),
                           _dtype_name(v, "values"), self.device)
        if "mask" in self._digests:       # the same mask arrays
            out._digests["mask"] = self._digests["mask"]
        return out


def csr_digest(M: int, K: int, indptr: np.ndarray, indices: np.ndarray) -> str:
    """sha256 of an (M x K) mask given as CSR arrays (its shape, row pointers, columns)."""
    h = hashlib.sha256()
    h.update(np.array([M, K], np.int64).tobytes())
    h.update(np.asarray(indptr).astype(np.int64).tobytes())
    h.update(np.asarray(indices).astype(np.int64).tobytes())
    return h.hexdigest()


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise ValueError(f"{name} is on the meta device (shapes without data): the kernel "
                             "is specialised to the weight's nonzeros; load or materialise "
                             "the weight first")
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor (or numpy array), got {type(x).__name__}")


def _dtype_name(t: torch.Tensor, name: str) -> str:
    if t.dtype not in WEIGHT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    return WEIGHT_DTYPES[t.dtype]


def _check_values(v: torch.Tensor, name: str) -> np.ndarray:
    v = v.detach().to("cpu")
    if not torch.isfinite(v).all():
        bad = int((~torch.isfinite(v)).sum())
        raise ValueError(f"{name} has {bad} NaN/inf nonzero value(s); a sparse kernel bakes or "
                         "packs weights and does not propagate them. Clean the weight first.")
    return v.to(torch.float64).numpy().copy()


def check_csr(M: int, K: int, indptr, indices, names=("indptr", "indices")):
    """``(indptr, indices)`` as int64 copies after checking that they are the CSR mask of an
    (M x K) matrix in canonical order: ``indptr`` (M + 1,) starts at 0, never decreases and
    ends at ``len(indices)``; every column is in ``[0, K)``; columns strictly increase within a
    row (sorted, no duplicates), the order the nonzero values are stored in. ``names``: what
    the two arrays are called in the ValueError (e.g. state_dict keys)."""
    p_name, i_name = names
    indptr = np.array(indptr, np.int64, copy=True)
    indices = np.array(indices, np.int64, copy=True)
    if indices.ndim != 1:
        raise ValueError(f"{i_name}: must be 1-D (one column per nonzero), got shape "
                         f"{indices.shape}")
    nnz = indices.shape[0]
    if indptr.shape != (M + 1,):
        raise ValueError(f"{p_name}: shape {indptr.shape}, expected ({M + 1},) for {M} rows")
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{p_name}: row pointers must start at 0, never decrease and end at "
                         f"{nnz} (the length of {i_name}); got {_brief(indptr)}")
    if nnz:
        bad = (indices < 0) | (indices >= K)
        if bad.any():
            raise ValueError(f"{i_name}: column index {indices[bad.argmax()]} out of range "
                             f"[0, {K})")
        row_start = np.zeros(nnz, bool)
        row_start[indptr[:-1][np.diff(indptr) > 0]] = True
        unsorted = (np.diff(indices) <= 0) & ~row_start[1:]
        if unsorted.any():
            row = int(np.searchsorted(indptr, unsorted.argmax() + 1, side="right") - 1)
            raise ValueError(f"{i_name}: the columns of row {row} must be sorted and distinct "
                             f"(the CSR order of the values), got "
                             f"{_brief(indices[indptr[row]:indptr[row + 1]])}")
    return indptr, indices


def _brief(a: np.ndarray, n: int = 8) -> str:
    return str(a.tolist()) if a.size <= n else f"{a[:n].tolist()} ... ({a.size} entries)"


def from_csr_arrays(M, K, indptr, indices, values, dtype="float32",
                    device=torch.device("cpu")) -> SparseWeight:
    indptr = np.asarray(indptr, np.int64)
    indices = np.asarray(indices, np.int64)
    if indptr.shape != (M + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0) \
            or indptr[-1] != indices.shape[0]:
        raise ValueError("weight: malformed CSR row pointers")
    if indices.size and (indices.min() < 0 or indices.max() >= K):
        raise ValueError(f"weight: column index out of range [0, {K})")
    # sort columns within rows and reject duplicates
    rows = np.repeat(np.arange(M), np.diff(indptr))
    order = np.lexsort((indices, rows))
    indices, values = indices[order], np.asarray(values, np.float64)[order]
    if indices.size > 1:
        same = (rows[1:] == rows[:-1]) & (indices[1:] == indices[:-1])
        if same.any():
            raise ValueError("weight: duplicate (row, column) entries")
    return SparseWeight(int(M), int(K), indptr, indices, values, dtype, device)


def as_sparse_weight(weight) -> SparseWeight:
    """Convert any accepted weight form to :class:`SparseWeight` (checks shape, dtype, NaN)."""
    if isinstance(weight, SparseWeight):
        return weight
    if isinstance(weight, tuple):
        if len(weight) != 2:
            raise TypeError("weight tuple must be (mask, values)")
        mask, values = (_as_tensor(weight[0], "mask"), _as_tensor(weight[1], "values"))
        if mask.dim() != 2:
            raise ValueError(f"mask must be 2-D (M x K), got shape {tuple(mask.shape)}")
        mask = mask.detach().to("cpu") != 0
        if values.dim() == 2:
            if values.shape != mask.shape:
                raise ValueError(f"values shape {tuple(values.shape)} disagrees with mask shape "
                                 f"{tuple(mask.shape)}")
            nz_vals = values.detach().to("cpu")[mask]
        elif values.dim() == 1:
            if values.numel() != int(mask.sum()):
                raise ValueError(f"values has {values.numel()} entries but mask has "
                                 f"{int(mask.sum())} nonzeros")
            nz_vals = values
        else:
            raise ValueError("values must be 1-D (the nonzeros) or 2-D (M x K)")
        dtype = _dtype_name(values, "values")
        rows, cols = mask.nonzero(as_tuple=True)
        indptr = np.zeros(mask.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(rows.numpy(), minlength=mask.shape[0]), out=indptr[1:])
        return from_csr_arrays(mask.shape[0], mask.shape[1], indptr, cols.numpy(),
                               _check_values(nz_vals, "values"), dtype, values.device)
    try:
        import scipy.sparse as sp
        if sp.issparse(weight):
            csr = sp.csr_array(weight)
            csr.sort_indices()
            vals = torch.from_numpy(np.asarray(csr.data))
            return from_csr_arrays(csr.shape[0], csr.shape[1], csr.indptr, csr.indices,
                                   _check_values(vals, "weight"), _dtype_name(vals, "weight"))
    except ImportError:  # pragma: no cover
        pass
    w = _as_tensor(weight, "weight")
    dtype = _dtype_name(w, "weight")
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D (M x K), got shape {tuple(w.shape)}")
    if w.layout == torch.sparse_coo:
        w = w.coalesce().to_sparse_csr()
    if w.layout == torch.sparse_csr:
        c = w.detach().to("cpu")
        return from_csr_arrays(c.shape[0], c.shape[1], c.crow_indices().numpy(),
                               c.col_indices().numpy(), _check_values(c.values(), "weight"),
                               dtype, w.device)
    if w.layout != torch.strided:
        raise TypeError(f"weight layout {w.layout} is not supported (dense, CSR or COO)")
    d = w.detach().to("cpu")
    if not torch.isfinite(d).all():
        _check_values(d[~torch.isfinite(d)], "weight")
    mask = d != 0
    rows, cols = mask.nonzero(as_tuple=True)
    indptr = np.zeros(d.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows.numpy(), minlength=d.shape[0]), out=indptr[1:])
    return SparseWeight(d.shape[0], d.shape[1], indptr, cols.numpy().astype(np.int64),
                        d[mask].to(torch.float64).numpy().copy(), dtype, w.device)
