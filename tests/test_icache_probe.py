"""bench/icache_probe.py: the generated straight-line kernel computes what its docstring says
(interpreter), so its GPU timings are of ``n`` FMAs run ``reps`` times; the floor it divides
by is the stated one."""
import os

import pytest
import torch

from bench.icache_probe import cycles_per_issue, load_kernel, probe_source, reference, run

DEV = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")


@pytest.mark.parametrize("n,reps", [(1, 1), (37, 1), (37, 3)])
def test_probe_kernel_computes_its_fmas(tmp_path, n, reps):
    kernel = load_kernel(n, tmp_path)
    X = torch.randn(2 * 32, generator=torch.Generator().manual_seed(n)).to(DEV)
    Y = run(kernel, X, 2, 32, 1, reps)
    torch.testing.assert_close(Y.cpu().double(), reference(X.cpu(), n, reps), rtol=1e-5,
                               atol=1e-5)


def test_probe_source_is_straight_line_fmas_with_distinct_constants():
    src = probe_source(50)
    body = [l.strip() for l in src.splitlines() if l.startswith("        a")]
    assert len(body) == 50 and len(set(body)) == 50
    assert body[17].startswith("a1 = a1 + x1 * ")


def test_cycles_per_issue_floor():
    # 1000 FMAs, 2 reps, 16 warps = 4 per sub-partition: 8000 issue cycles; 4 us at 2 GHz
    assert cycles_per_issue(4.0, 2000.0, 1000, 2, 16) == pytest.approx(1.0)
    # fewer than 4 warps still take one issue per instruction
    assert cycles_per_issue(1.0, 2000.0, 1000, 1, 2) == pytest.approx(2.0)
