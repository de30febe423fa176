"""Test setup: the CPU interpreter by default; ``SPARSERT_TEST_DEVICE=cuda`` runs on a GPU.

The kernel cache is ``$SPARSERT_CACHE_DIR`` when set (kept), else a fresh temporary folder that
the session removes when it ends.

Hypothesis profiles: ``ci`` (default, a few minutes on 2 cores), ``dev``, ``gpu``, ``slow`` (not
in CI: 10,000 cases per property test, i.e. per (mode, dtype) of the wide cases; hours on the
CPU); choose with ``HYPOTHESIS_PROFILE``. The chosen name is left in
``SPARSERT_HYPOTHESIS_PROFILE`` for tests that scale their own budget in ``ci``.
"""
import os
import shutil
import tempfile

DEVICE = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"     # must precede the first import of triton
_SESSION_CACHE_DIR = None      # the cache folder this session made (and removes at its end)
if not os.environ.get("SPARSERT_CACHE_DIR"):
    _SESSION_CACHE_DIR = tempfile.mkdtemp(prefix="sparsert-test-cache-")
    os.environ["SPARSERT_CACHE_DIR"] = _SESSION_CACHE_DIR

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=25, derandomize=True, **_common)
settings.register_profile("dev", max_examples=100, **_common)
settings.register_profile("gpu", max_examples=40, **_common)
settings.register_profile("slow", max_examples=10_000, **_common)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "gpu" if DEVICE == "cuda" else "ci")
os.environ["SPARSERT_HYPOTHESIS_PROFILE"] = PROFILE
settings.load_profile(PROFILE)


def pytest_unconfigure(config):
    """Remove the session's own kernel cache (generated sources, Triton binaries, tuned
    plans: megabytes per run); a folder the user named in SPARSERT_CACHE_DIR stays."""
    if _SESSION_CACHE_DIR is not None:
        shutil.rmtree(_SESSION_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def device():
    return DEVICE


class RecordingKernel:
    """A compiled kernel stand-in: records the X (address) and the arguments of every
    launch, and runs nothing."""
    function = packed_metadata = None

    def __init__(self):
        self.xs, self.args = [], []

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, gx, gy, gz, stream, function, meta, launch_meta, enter, exit_, *args):
        self.xs.append(args[0] if isinstance(args[0], int) else args[0].data_ptr())
        self.args.append(args)


@pytest.fixture
def recorded_launches() -> dict:
    """The launchers on, as on a GPU, keeping one :class:`RecordingKernel` per specialisation
    key (the dict returned: key -> kernel) as Triton keeps its compiled kernels: planned
    calls launch them directly; nothing is computed. The launchers it touched are restored
    on teardown (``bench.host_profile.launches_replaced``)."""
    from bench.host_profile import launches_replaced
    compiled = {}
    with launches_replaced(lambda key: compiled.setdefault(key[2], RecordingKernel())):
        yield compiled


@pytest.fixture
def on_test_device():
    """Tensors and modules the test makes land on the test device (a default-device context):
    CPU tensors under the interpreter, CUDA ones with SPARSERT_TEST_DEVICE=cuda. A test file
    opts in with ``pytestmark = pytest.mark.usefixtures("on_test_device")``."""
    import torch
    with torch.device(DEVICE):
        yield


def pytest_collection_modifyitems(config, items):
    import torch
    has_gpu = DEVICE == "cuda" and torch.cuda.is_available()
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run with SPARSERT_TEST_DEVICE=cuda)")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def run_aot_script(tmp_path_factory):
    """``run(script, timeout)``: a compile script (sm_90 AOT compiles) run in a fresh Python
    without the interpreter (a compile inside this process, which has TRITON_INTERPRET=1,
    fails at random), with its own kernel cache; returns the JSON of its last output line."""
    import json
    import subprocess
    import sys

    def run(script: str, timeout: float):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["SPARSERT_CACHE_DIR"] = str(tmp_path_factory.mktemp("aot-cache"))
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, timeout=timeout)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1])
    return run
