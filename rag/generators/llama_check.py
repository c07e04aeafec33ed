"""Smoke test of the local llama.cpp build: decode a multi-token batch in a child process before the model is used.

A llama.cpp build that cannot run on this CPU (ggml's AMX kernels on some Intel machines, a wheel built for another
CPU) kills the process with a signal in the middle of an answer. Run first in a child, the crash becomes one line
that names the cause and the remedy. A build, model and settings that passed are remembered, so the check costs a
few seconds once, not on every start.

Run as `python -m rag.generators.llama_check MODEL SETTINGS_JSON` (the child's side).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from rag.config import Config
from rag.errors import RagError
from rag.models import cpu_flags

# Longer than one token, so that the matrix kernels of a batch run (a one-token prompt passes on a broken build).
PROBE = "تلقى أمير قطر رسالة شفهية من الرئيس الروسي نقلها نائب وزير الخارجية. " * 4
TIMEOUT = 600  # seconds: loading a model from a cold disk on a busy machine can be slow
AMX = "AMX_INT8 = 1"  # what llama.cpp's system info says when its AMX kernels are compiled in


@dataclass(frozen=True)
class LlamaSettings:
    """How llama.cpp runs a model: its context, its threads (writing, reading the prompt), batch and GPU layers."""

    n_ctx: int = 2048
    n_threads: int = 1
    n_threads_batch: int = 2
    n_batch: int = 512
    n_gpu_layers: int = 0

    @classmethod
    def from_config(cls, config: Config) -> LlamaSettings:
        """The settings of the config."""
        return cls(config.n_ctx, config.n_threads, config.n_threads_batch, config.n_batch, config.n_gpu_layers)

    def kwargs(self) -> dict:
        """The keyword arguments of llama_cpp.Llama."""
        return asdict(self)


def probe(path: str, settings: LlamaSettings) -> int:
    """The child: load the model with these settings, print the build's features, decode the probe batch."""
    import llama_cpp

    print(llama_cpp.llama_print_system_info().decode("utf-8", "replace"), flush=True)
    llm = llama_cpp.Llama(model_path=path, **settings.kwargs(), verbose=False)
    tokens = llm.tokenize(PROBE.encode("utf-8"), add_bos=False)
    llm.eval(tokens)
    print(f"decoded {len(tokens)} tokens", flush=True)
    return 0


def fingerprint(path: Path, settings: LlamaSettings) -> str:
    """What the outcome depends on: the llama.cpp libraries, the model file, the settings and the CPU."""
    spec = importlib.util.find_spec("llama_cpp")  # where the package is, without loading its library here
    if spec is None or not spec.submodule_search_locations:
        raise RagError("llama-cpp-python is not installed: run `make setup` (see README)")
    parts = [repr(settings), sys.version]
    library = Path(spec.submodule_search_locations[0]) / "lib"
    for file in sorted(library.glob("*")) + [path]:
        stat = file.stat()
        parts.append(f"{file.resolve()} {stat.st_size} {stat.st_mtime_ns}")
    parts += [flags] if (flags := cpu_flags()) else []  # not Linux: the libraries and the model decide
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def crash_message(returncode: int, system_info: str, model: str) -> str:
    """One line for a child killed by a signal: what crashed, why, and what to do."""
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    what = f"llama.cpp crashed ({name}) decoding a test batch with {model} on this CPU"
    if AMX in system_info:
        return (f"{what}: this llama.cpp build includes ggml's AMX kernels, which crash on this machine "
                "(llama.cpp issue #20824); rebuild it without them with `make setup` (README: The llama.cpp build)")
    return (f"{what}: this llama.cpp build does not run here (built for another CPU?); rebuild it on this machine "
            "with `make setup` (README: The llama.cpp build)")


def check(path: Path, settings: LlamaSettings, passed_dir: Path | None,
          command: list[str] | None = None) -> str | None:
    """Raise a one-line RagError when decoding a batch with this model and these settings kills the process; a
    check that passed is recorded in passed_dir. A failure other than a crash is returned (the child's last line of
    errors), for the caller to report: None when the batch was decoded."""
    record = passed_dir / f"llama-{fingerprint(path, settings)}.ok" if passed_dir else None
    if record is not None and record.exists():
        return None
    command = command or [sys.executable, "-m", __name__, str(path), json.dumps(settings.kwargs())]
    try:
        child = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise RagError(f"llama.cpp did not decode a test batch of {path.name} in {TIMEOUT} s: the machine is "
                       "overloaded or the model too large for it") from e
    if child.returncode < 0:
        raise RagError(crash_message(child.returncode, child.stdout, path.name))
    if child.returncode != 0:
        return next((line.strip() for line in reversed(child.stderr.splitlines()) if line.strip()),
                    f"exit code {child.returncode}")
    if record is not None:
        with contextlib.suppress(OSError):  # an unwritable cache only means checking again next time
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"model": str(path), "settings": settings.kwargs(), "stdout": child.stdout}))
    return None


if __name__ == "__main__":
    model, given = sys.argv[1:]
    sys.exit(probe(model, LlamaSettings(**json.loads(given))))
