"""The package's folders: every one with an ``__init__.py`` is listed in pyproject.toml's
``packages`` (a folder left out installs without its modules outside an editable install)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_package_folder():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"([\w.]+)"', re.search(r"^packages = \[(.*?)\]", text,
                                                        re.M | re.S).group(1)))
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("sparsert_triton", "dsl") for p in (ROOT / top).rglob("__init__.py")}
    assert {"sparsert_triton.compiler", "sparsert_triton.compiler.render",
            "sparsert_triton.runtime"} <= found
    assert listed == found
