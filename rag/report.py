"""Reports of `rag eval` and the benchmark scripts: Markdown tables, and the files one run leaves in a results folder.

A run overwrites its current report, <folder>/<name>.md and <name>.json, appends one line to <folder>/history.jsonl
(date, revision, machine, headline figures) and writes its per-question rows to <folder>/runs/<name>-<time>.jsonl, a
folder for git to ignore. In a repository a run then changes two tracked files: its report and the history.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rag.errors import RagError

HISTORY = "history.jsonl"
RUNS = "runs"


def cell(value: object) -> str:
    """A value as a Markdown table cell: None as '–', a float with 3 decimals, pipes escaped, on one line."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    """The lines of a Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)]


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: when the cores are shared, latencies depend on them."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """CPU count and model, RAM, platform, Python version and load average of this machine."""
    import psutil

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or "unknown")
    return {"cpus": os.cpu_count(), "cpu_model": model, "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(), "load_average": load_average()}


def package_version() -> str:
    """'rag <version>' of the installed package: what a run records when it is given no commit."""
    try:
        return f"rag {version('arabic-rag')}"
    except PackageNotFoundError:
        return "rag (not installed)"


def commit(checkout: Path) -> str:
    """The git commit of a checkout, with '+changes' when tracked files differ from it ('' when it is not one)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD")
    return head + ("+changes" if head and git("status", "--porcelain", "-uno") else "")


def write_report(folder: Path, name: str, markdown: str, result: dict, headline: dict, revision: str,
                 machine: dict, rows: list[dict] | None = None) -> Path:
    """Overwrite folder/<name>.md and <name>.json (the result), append the run's line to folder/history.jsonl and,
    when given, write the per-question rows to folder/runs/<name>-<time>.jsonl; the report's path."""
    folder = Path(folder)
    # Reports are overwritten only in a results folder, one a run made (it holds the history): never a user's file.
    taken = [n for n in (f"{name}.md", f"{name}.json") if (folder / n).exists()]
    if taken and not (folder / HISTORY).exists():
        raise RagError(f"{folder / taken[0]} exists and {folder} is not a results folder (no {HISTORY}): give "
                       "another folder for the report")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(markdown, encoding="utf-8")
    (folder / f"{name}.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if rows is not None:
        (folder / RUNS).mkdir(exist_ok=True)
        with open(folder / RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    line = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "name": name, "revision": revision,
            "machine": f"{machine['cpus']} × {machine['cpu_model']}", **headline}
    with open(folder / HISTORY, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return folder / f"{name}.md"
