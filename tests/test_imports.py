"""Every module imports on its own, in a fresh interpreter (no import circle hidden by the order in which others load
them), and `import rag` stays cheap: third-party libraries load only in the code that needs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import rag

PACKAGE = Path(rag.__file__).parent
# Every module under rag/ but __main__, which runs the command line when imported.
MODULES = sorted(
    ".".join(("rag", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
    if path.name != "__main__.py"
)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_import_rag_loads_no_third_party_library():
    code = ("import sys; before = set(sys.modules); import rag; "
            "print(*sorted({m.split('.')[0] for m in set(sys.modules) - before} - sys.stdlib_module_names))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["rag"]
