"""Direct launches: the specialisation key, and (on a GPU) reuse only where Triton would."""
import pytest
import torch

from sparsert_triton.direct import spec_key


def test_spec_key_separates_what_triton_specialises_on():
    a = torch.zeros(64)
    assert spec_key([a, 1, 32, 7]) == spec_key([torch.ones(64), 1, 48, 5])
    assert spec_key([a[1:]]) != spec_key([a])                     # 16-byte alignment
    assert spec_key([a.half()]) != spec_key([a])                  # pointer type
    assert spec_key([1]) != spec_key([2]) != spec_key([16])       # == 1, % 16
    assert spec_key([2**31]) != spec_key([2**31 - 2])             # 64-bit integer
    assert spec_key([True]) != spec_key([1])
    assert spec_key([1.0]) == spec_key([2.5])                     # floats are not specialised


@pytest.mark.gpu
def test_direct_launches_match_the_reference_across_alignments_and_sizes():
    from sparsert_triton import Schedule, sparse_kernel
    g = torch.Generator().manual_seed(0)
    W = torch.randn(40, 70, generator=g) * (torch.rand(40, 70, generator=g) < 0.2)
    for s in (Schedule(mode="table", chunk=4, prefetch=True), Schedule(mode="values")):
        k = sparse_kernel(lambda W, X: W @ X, schedule=s).specialize(W)
        base = torch.randn(70, 300, device="cuda")
        for X in (base, base[:, 1:], base[:, :17], base[:, 16:], base[:, 3:200], base):
            for _ in range(3):                  # first call compiles, the next ones reuse
                Y = k(X)
            ref = (W.double() @ X.double().cpu()).cuda()
            torch.testing.assert_close(Y.double(), ref, rtol=1e-5, atol=1e-5)
        assert any(var.launcher.kernels for var in k._variants.values())
