"""The llama.cpp build: compiled without AMX, and smoke-tested in a child process before a model is used."""

import re
import shutil
import signal
import subprocess
import sys
from dataclasses import replace

import pytest

from rag.config import PACKAGE_ROOT, Config
from rag.errors import RagError
from rag.generators.llama_check import LlamaSettings, check, crash_message

SEGFAULT = [sys.executable, "-c", "import os, signal; print('CPU : AVX2 = 1 | AMX_INT8 = 1 |', flush=True); "
                                  "os.kill(os.getpid(), signal.SIGSEGV)"]
FAILS = [sys.executable, "-c", "raise SystemExit(1)"]
PASSES = [sys.executable, "-c", "print('decoded 40 tokens')"]
SETTINGS = LlamaSettings(n_ctx=2048, n_threads=1, n_threads_batch=2, n_batch=512, n_gpu_layers=0)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_a_crash_in_the_child_is_one_line_naming_amx_and_the_remedy(model, tmp_path):
    with pytest.raises(RagError) as caught:
        check(model, SETTINGS, tmp_path / "checks", command=SEGFAULT)
    message = str(caught.value)
    assert "\n" not in message
    assert "crashed (SIGSEGV)" in message and "AMX" in message and "`make setup`" in message
    assert not (tmp_path / "checks").exists()  # a crash is never remembered as a pass


def test_a_crash_of_a_build_without_amx_still_names_the_remedy():
    message = crash_message(-signal.SIGILL, "CPU : AVX2 = 1 | AVX512 = 1 |", "m.gguf")
    assert "crashed (SIGILL)" in message and "AMX" not in message and "`make setup`" in message


def test_a_pass_is_remembered_and_not_run_again(model, tmp_path):
    check(model, SETTINGS, tmp_path / "checks", command=PASSES)
    assert len(list((tmp_path / "checks").glob("llama-*.ok"))) == 1
    check(model, SETTINGS, tmp_path / "checks", command=SEGFAULT)  # remembered: the child is not run
    with pytest.raises(RagError, match="crashed"):  # other settings are another check
        check(model, replace(SETTINGS, n_batch=256), tmp_path / "checks", command=SEGFAULT)


def test_a_failure_that_is_not_a_crash_is_returned_for_the_caller_to_report(model, tmp_path):
    assert check(model, SETTINGS, tmp_path / "checks", command=FAILS) == "exit code 1"
    assert check(model, SETTINGS, tmp_path / "checks", command=[sys.executable, "-c", "import sys; "
                 "sys.exit('failed to load model')"]) == "failed to load model"
    assert not (tmp_path / "checks").exists()
    assert check(model, SETTINGS, tmp_path / "checks", command=PASSES) is None


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_makefiles_llama_flags_leave_out_amx_on_an_amx_cpu_and_keep_avx512():
    # -march=native on a Sapphire Rapids machine is -march=sapphirerapids: what the build would see there.
    flags = re.search(r"^LLAMA_CFLAGS \?= (.+)$", (PACKAGE_ROOT / "Makefile").read_text(), re.M).group(1).split()
    flags = ["-march=sapphirerapids" if f == "-march=native" else f for f in flags]
    macros = subprocess.run(["gcc", *flags, "-dM", "-E", "-"], input="", capture_output=True, text=True,
                            check=True).stdout
    assert "__AVX512F__" in macros and "__AVX512VNNI__" in macros
    assert "__AMX_INT8__" not in macros and "__AMX_TILE__" not in macros  # ggml's AMX kernels need __AMX_INT8__


def test_rag_models_pull_reports_a_check_that_failed_without_a_crash(model, monkeypatch):
    from rag.generators import llama

    monkeypatch.setattr(llama, "check", lambda *_args: "failed to load model")
    with pytest.raises(RagError, match=r"could not decode a test batch with model.gguf \(failed to load model\)"):
        llama.LlamaGenerator.check_config(Config(), str(model))
