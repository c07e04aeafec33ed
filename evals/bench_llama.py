"""llama.cpp on this CPU: prompt and writing tokens/s of the default GGUF model with the CPU weight repacking on and
off, and with cores or cores - 1 threads (writing and reading the prompt, or cores - 1 writing and cores reading),
on a quiet machine and while another process keeps one core busy; whole answers to gold dev questions for each.
Each setting runs in a fresh process, one at a time, its runs interleaved with the others'. Needs `make index`.
Writes evals/results/llama-cpu.md and llama-cpu.json, and the run's line in history.jsonl (rag.report).

    .venv/bin/python evals/bench_llama.py [--runs 3] [--generate 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rag.config import load_config, usable_cores
from rag.models import resolve
from rag.report import commit, machine, table, write_report

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PROMPT_FILE = HERE.parent / "seeds"  # the prompt: the start of the seed articles, cut to about 500 tokens
PROMPT_TOKENS = 500


def child(path: str, threads: int, threads_batch: int, repack: bool, generate: int) -> dict:
    """One measurement in this process: load, read the prompt in batches, write `generate` tokens greedily."""
    import llama_cpp

    if not repack:  # llama.cpp's use_extra_bufts: the repacked (and AMX) weight layouts
        defaults = llama_cpp.llama_cpp.llama_model_default_params

        def no_extra_bufts():
            params = defaults()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = no_extra_bufts
    config = load_config()
    llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads_batch,
                          n_batch=config.n_batch, verbose=False)
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(PROMPT_FILE.glob("*.txt")))
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True)[:PROMPT_TOKENS]
    start = time.perf_counter()
    llm.eval(tokens)
    read = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(generate):
        llm.eval([llm.sample(top_k=1)])
    wrote = time.perf_counter() - start
    return {"prompt_tps": len(tokens) / read, "write_tps": generate / wrote}


def answers(threads: int, threads_batch: int, questions: int) -> dict:
    """Whole answers in this process: the assistant over the built index, warmed up, asked the first answerable
    questions of the gold dev split; the median answer time."""
    from rag.assistant import Assistant
    from rag.evaluate import load_gold

    assistant = Assistant.load(load_config(n_threads=threads, n_threads_batch=threads_batch))
    assistant.warm_up()
    asked = [q["question"] for q in load_gold(HERE / "gold-dev.jsonl") if q["answerable"]][:questions]
    return {"answer_s": statistics.median(assistant.ask(q).timings["total"] for q in asked)}


def run_one(*args: object, busy: bool) -> dict:
    """A fresh process measures one setting; with busy, another process spins on a core meanwhile."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True,
                             check=True)
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu() -> str:
    """The CPU's model name and the vector extensions that matter to llama.cpp."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")
    return f"{name}, {os.cpu_count()} cores ({', '.join(f for f in wanted if f in flags)})"


def against(figures: dict, base: dict, name: str, digits: int) -> list[str]:
    """A median and its ratio to the baseline's, as table cells ('–' when the setting did not measure it)."""
    if name not in figures:
        return ["–", "–"]
    return [f"{figures[name]:.{digits}f}", f"{figures[name] / base[name]:.2f}"]


def main(argv: list[str] | None = None) -> None:
    """Measure every setting `runs` times, interleaved, and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--generate", type=int, default=32, help="tokens written per run")
    parser.add_argument("--questions", type=int, default=8, help="gold dev questions answered per run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default evals/results)")
    args = parser.parse_args(argv)
    config = load_config()
    path = resolve(config.generator, config.models_dir, "generator")
    cores = usable_cores()
    settings = [  # (label, threads writing, threads reading the prompt, repack, busy)
        (f"{cores} threads, quiet (baseline)", cores, cores, True, False),
        (f"repack off, {cores} threads, quiet", cores, cores, False, False),
        (f"{cores - 1} threads, quiet", cores - 1, cores - 1, True, False),
        (f"{cores - 1} writing, {cores} reading (default), quiet", cores - 1, cores, True, False),
        (f"{cores} threads, one core busy", cores, cores, True, True),
        (f"{cores - 1} threads, one core busy", cores - 1, cores - 1, True, True),
        (f"{cores - 1} writing, {cores} reading (default), one core busy", cores - 1, cores, True, True),
    ]
    runs: dict[str, list[dict]] = {label: [] for label, *_ in settings}
    for n in range(args.runs):
        for label, threads, threads_batch, repack, busy in settings:
            speeds = run_one("tokens", path, threads, threads_batch, int(repack), args.generate, busy=busy)
            if repack:  # the answers use the build as it is: repacking on
                speeds |= run_one("answers", threads, threads_batch, args.questions, busy=busy)
            runs[label].append(speeds)
            print(f"run {n + 1}: {label}: {runs[label][-1]}", flush=True)
    medians = {label: {name: statistics.median(r[name] for r in rows) for name in rows[0]}
               for label, rows in runs.items()}
    base = medians[settings[0][0]]
    rows = [[label, *against(m, base, "prompt_tps", 1), *against(m, base, "write_tps", 1),
             *against(m, base, "answer_s", 2)] for label, m in medians.items()]
    lines = [
        "# llama.cpp on this CPU", "",
        f"`.venv/bin/python evals/bench_llama.py --runs {args.runs} --generate {args.generate}`: {path.name}, "
        f"a {PROMPT_TOKENS}-token Arabic prompt read in batches of {config.n_batch}, then {args.generate} tokens "
        f"written greedily; medians of {args.runs} runs, each in a fresh process, the settings interleaved.", "",
        f"CPU: {cpu()}. Python {platform.python_version()}.", "",
        f"Answers: the median time of a whole answer (retrieval, evidence, the reader's passes) to the first "
        f"{args.questions} answerable questions of the gold dev split, the assistant warmed up; medians of the runs.",
        "",
        *table(["setting", "prompt tokens/s", "× baseline", "writing tokens/s", "× baseline", "answer s",
               "× baseline"], rows),
    ]
    text = "\n".join(lines) + "\n"
    write_report(args.out, "llama-cpu", text, {"model": path.name, "runs": runs, "medians": medians}, medians,
                 commit(HERE.parent), machine())
    print(text)


if __name__ == "__main__":
    if sys.argv[1:3] == ["--child", "tokens"]:
        model, threads, threads_batch, repack, generate = sys.argv[3:]
        print(json.dumps(child(model, int(threads), int(threads_batch), bool(int(repack)), int(generate))))
    elif sys.argv[1:3] == ["--child", "answers"]:
        print(json.dumps(answers(*map(int, sys.argv[3:]))))
    else:
        main()
