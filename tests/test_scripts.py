"""scripts/gpu.sh, the one GPU entry point: valid bash, every task in its help, every module it
runs present, and clear refusals (unknown task, missing DLMC set, a benchmark not in the tree)."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_SH = ROOT / "scripts" / "gpu.sh"


def run(*args, env=None):
    return subprocess.run(["bash", str(GPU_SH), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)


def tasks() -> set:
    """The task names of gpu.sh's case statement."""
    body = GPU_SH.read_text().split('case "$task" in', 1)[1]
    names = set()
    for label in re.findall(r"^  ([\w|-]+)\)", body, re.M):
        names |= set(label.split("|"))
    return names - {"-h", "--help", "help"}


def test_gpu_sh_parses_and_documents_every_task():
    assert subprocess.run(["bash", "-n", str(GPU_SH)]).returncode == 0
    assert tasks() == {"tests", "suite", "conv", "e2e", "compile", "ncu", "llm", "eager",
                       "decoder"}
    r = run("help")
    assert r.returncode == 2
    for task in tasks():
        assert re.search(rf"^  {task} ", r.stdout, re.M), task


def test_gpu_sh_runs_only_modules_that_exist():
    text = GPU_SH.read_text()
    modules = set(re.findall(r"python3 -m (bench\.\w+|sparsert_triton\.\w+)", text))
    assert {"bench.dlmc_bench", "bench.conv_bench", "bench.e2e", "bench.compile_time",
            "bench.report", "bench.decoder_bench"} <= modules
    for mod in modules:
        assert (ROOT / (mod.replace(".", "/") + ".py")).exists(), mod


def test_gpu_sh_refuses_clearly(tmp_path):
    r = run("bogus")
    assert r.returncode == 2 and "unknown task 'bogus'" in r.stderr
    env = {"PATH": "/usr/bin:/bin", "DLMC": str(tmp_path / "none"), "OUT": str(tmp_path / "out")}
    r = run("suite", env=env)
    assert r.returncode == 2 and f"no DLMC set at {tmp_path / 'none'}" in r.stderr
    for task in ("llm", "eager"):
        if not (ROOT / "bench" / f"{task}_bench.py").exists():
            r = run(task, env=env)
            assert r.returncode == 2 and f"bench/{task}_bench.py is not in this checkout" in r.stderr
