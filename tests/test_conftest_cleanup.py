"""The test session removes the kernel cache it created (``tests/conftest.py``)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

INNER = '''
import os
from pathlib import Path

def test_fill_the_cache():
    d = Path(os.environ["SPARSERT_CACHE_DIR"])
    (d / "entry").mkdir()
    (d / "entry" / "kernel.py").write_text("x = 1")
    Path(os.environ["CACHE_DIR_RECORD"]).write_text(str(d))
'''


def _run_session(tmp_path, env_extra):
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(INNER)
    record = tmp_path / "cache_dir.txt"
    env = {k: v for k, v in os.environ.items() if k != "SPARSERT_CACHE_DIR"}
    env.update(CACHE_DIR_RECORD=str(record), TMPDIR=str(tmp_path), **env_extra)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
                         env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    return Path(record.read_text())


def test_the_session_cache_dir_is_removed_at_the_end(tmp_path):
    used = _run_session(tmp_path, {})
    assert used.name.startswith("sparsert-test-cache-")
    assert not used.exists()
    assert not list(tmp_path.glob("sparsert-test-cache-*"))


def test_a_cache_dir_given_by_the_user_is_kept(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    used = _run_session(tmp_path, {"SPARSERT_CACHE_DIR": str(mine)})
    assert used == mine and (mine / "entry" / "kernel.py").exists()
    assert not list(tmp_path.glob("sparsert-test-cache-*"))     # none made and left behind
