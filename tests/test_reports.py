"""rag.report, and the results the repository keeps: one current report per benchmark, figures the README quotes
that agree with them, and benchmark scripts that import only the package."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from rag.config import PACKAGE_ROOT
from rag.errors import RagError
from rag.report import cell, table, write_report

EVALS = PACKAGE_ROOT / "evals"
RESULTS = EVALS / "results"
README = PACKAGE_ROOT / "README.md"
MACHINE = {"cpus": 2, "cpu_model": "test CPU"}


def test_a_table_shows_none_floats_and_pipes_plainly():
    assert table(["a", "b"], [[None, 0.5], ["x|y", "two\nlines"]]) == [
        "| a | b |", "|---|---|", "| – | 0.500 |", "| x\\|y | two lines |"]
    assert cell(3) == "3" and cell(1 / 3) == "0.333"


def test_a_run_overwrites_its_report_and_adds_one_line_to_the_history(tmp_path):
    for n in (1, 2):
        path = write_report(tmp_path, "demo", f"# run {n}\n", {"n": n}, {"score": n / 10}, f"rev{n}", MACHINE,
                            [{"id": "q1", "n": n}])
    assert path == tmp_path / "demo.md" and path.read_text() == "# run 2\n"
    assert json.loads((tmp_path / "demo.json").read_text()) == {"n": 2}
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [(h["name"], h["revision"], h["machine"], h["score"]) for h in history] == [
        ("demo", "rev1", "2 × test CPU", 0.1), ("demo", "rev2", "2 × test CPU", 0.2)]
    rows = sorted((tmp_path / "runs").glob("demo-*.jsonl"))
    assert rows and json.loads(rows[-1].read_text().splitlines()[0]) == {"id": "q1", "n": 2}


def test_a_report_is_never_written_into_a_folder_the_project_does_not_own(tmp_path):
    (tmp_path / "demo.md").write_text("my notes", encoding="utf-8")
    with pytest.raises(RagError, match="is not a results folder"):
        write_report(tmp_path, "demo", "# run\n", {}, {}, "rev", MACHINE)
    assert (tmp_path / "demo.md").read_text(encoding="utf-8") == "my notes"


def test_without_rows_nothing_goes_to_runs(tmp_path):
    write_report(tmp_path, "demo", "# x\n", {}, {}, "rev", MACHINE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.md", "history.jsonl"]


def test_the_repository_keeps_one_current_report_per_benchmark_and_no_per_run_files():
    names = [p.name for p in RESULTS.iterdir() if p.is_file()]
    assert not [n for n in names if "-latest" in n or re.search(r"-\d{8}-\d{6}\.", n) or n.endswith(".jsonl")
                and n != "history.jsonl"]
    for line in (RESULTS / "history.jsonl").read_text(encoding="utf-8").splitlines():
        run = json.loads(line)
        assert run.keys() >= {"date", "name", "revision", "machine"} and (RESULTS / f"{run['name']}.md").exists()
    assert "/evals/results/runs/" in (PACKAGE_ROOT / ".gitignore").read_text().splitlines()


def test_every_results_file_the_docs_cite_exists():
    """Every evals/results/ file cited, except those cited in an earlier commit (`c4226bb:evals/results/…`)."""
    cited = set()
    for doc in (README, EVALS / "README.md", PACKAGE_ROOT / "rag" / "config.py"):
        text = doc.read_text(encoding="utf-8")
        cited |= set(re.findall(r"(?<!:)evals/results/([\w.\-]+\.(?:jsonl|json|md))", text))
    assert cited and not [name for name in cited if not (RESULTS / name).exists()]


# The README's answer table (section "Performance", "Answers") against evals/results/ablation.json.
README_COLUMNS = {"correct": "correct", "token F1": "f1", "exact": "exact", "false refusals": "false_refusals",
                  "unanswerable refused": "unanswerable_refused"}


def readme_answer_rows() -> list[dict]:
    """The rows of the README's answer table, each set's label carried down to the rows that leave it empty."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index("**Answers**") :]
    lines = block[block.index("| set |") :].split("\n\n")[0].splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows, label = [], ""
    for line in lines[2:]:
        row = dict(zip(header, (c.strip().strip("*") for c in line.strip("|").split("|")), strict=True))
        label = row["set"] or label
        rows.append({**row, "set": label})
    return rows


def current_figures(label: str, chooser: str) -> dict:
    """The ablation report's figures of a README row: its set by the name the label starts with, its chooser by
    the name before any parenthesis."""
    results = json.loads((RESULTS / "ablation.json").read_text(encoding="utf-8"))["results"]
    [figures] = [rows[name] for key, rows in results.items() if label.startswith(key.split(" (")[0])
                 for name in rows if name.split(" (")[0] == chooser]
    return figures


def test_the_readme_answer_figures_are_the_current_ablation_report():
    rows = readme_answer_rows()
    assert len(rows) == 9
    for row in rows:
        figures = current_figures(row["set"], row["chooser"])
        for column, key in README_COLUMNS.items():
            assert row[column] == cell(figures[key]), (row["set"], row["chooser"], column)


@pytest.mark.parametrize("script", sorted(EVALS.glob("*.py")), ids=lambda p: p.name)
def test_a_benchmark_script_imports_only_the_package_and_no_private_names(script: Path):
    tree = ast.parse(script.read_text(encoding="utf-8"))
    local = {p.stem for p in EVALS.glob("*.py")} | {"conftest", "tests"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] not in local, node.module
            assert not [a.name for a in node.names if node.module.startswith("rag") and a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.split(".")[0] in local]
        elif isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
            pytest.fail(f"{script.name} changes sys.path")
