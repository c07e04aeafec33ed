"""The package as users install it: a wheel (not an editable checkout) carries its prompts, strings and data, and
`rag ask` works from it."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rag.config import PACKAGE_ROOT

DATA = ["rag/prompts/reader_system.txt", "rag/prompts/reader.toml", "rag/prompts/refusal.txt", "rag/data/places.txt",
        "rag/prompts/ui.toml", "rag/prompts/ui.css"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the package, built from a copy of its sources (a build leaves files behind where it runs)."""
    source, folder = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE_ROOT / name, source / name)
    for name in ("rag", "prompts"):
        shutil.copytree(PACKAGE_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(folder), str(source)],
                   check=True, capture_output=True)
    [built] = folder.glob("arabic_rag-*.whl")
    return built


def test_the_wheel_carries_the_prompts_strings_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(DATA) <= names
    modules = {f"rag/{path.relative_to(PACKAGE_ROOT / 'rag').as_posix()}" for path in PACKAGE_ROOT.glob("rag/**/*.py")}
    assert modules <= names  # the package list in pyproject.toml names every subpackage
    assert not any(name.startswith(("tests/", "evals/", "seeds/")) for name in names)


@pytest.mark.real
def test_rag_ask_from_an_installed_wheel(wheel, real_assistant, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "TQDM_DISABLE": "1"}
    where = subprocess.run([sys.executable, "-c", "import rag; print(rag.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(site))  # the installed copy, not the checkout
    index = str(real_assistant.config.index_dir)
    question = "متى زار بوتين قطر لأول مرة كرئيس؟"
    result = subprocess.run([sys.executable, "-m", "rag", "--index-dir", index, "ask", question], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "2007" in result.stdout
