"""rag.evaluate: scoring functions on tiny Arabic texts, gold and SQuAD runs with the fakes, and one real run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from conftest import HashEmbedder, ScriptedGenerator
from hypothesis import given, settings
from hypothesis import strategies as st

from rag import cli, evaluate, metrics
from rag.config import PACKAGE_ROOT
from rag.errors import RagError
from rag.metrics import (
    answer_written,
    citation_scores,
    contains,
    exact_match,
    items_found,
    list_items,
    mean,
    percentile,
    recall_at,
    reciprocal_rank,
    token_f1,
)


def test_exact_match_ignores_markers_digits_tashkeel_and_letter_forms():
    assert exact_match("٢٠٠٧ [1].", ["2007"])
    assert exact_match("السعوديّة.", ["السعودية"])
    assert exact_match("إيران", ["ايران"])
    assert not exact_match("في فبراير عام 2007 [1].", ["2007"])
    assert not exact_match("", [""])


def test_contains_matches_words_with_clitics_and_persian_letters():
    assert contains("زار بوتين قطر في فبراير عام 2007 [1].", ["1988", "2007"])
    assert contains("روسيا وإيران وقطر", ["إيران"])
    assert contains("روسیا", ["روسيا"])
    assert contains("لا، لم تلتزم إسرائيل بالاتفاق.", ["لا"])
    assert not contains("20071", ["2007"])
    assert not contains("قال إنه لاعب", ["لا"])
    assert not contains("", ["2007"])


def test_token_f1_is_the_best_over_references():
    assert token_f1("الحدود البرية مع السعودية", ["الحدود البرية"]) == pytest.approx(2 / 3)
    assert token_f1("الحدود البرية [1]", ["غزة", "الحدود البريّة"]) == 1.0
    assert token_f1("غزة", ["الحدود البرية"]) == 0.0
    assert token_f1("", ["غزة"]) == 0.0


def test_list_items_and_items_found():
    assert list_items("السعودية، الإمارات، البحرين") == ["السعوديه", "الامارات", "البحرين"]
    assert list_items("سوريا") == []
    assert items_found("السعودية والإمارات [1].", ["السعودية، الإمارات، البحرين"]) == pytest.approx(2 / 3)
    assert items_found("غزة والضفة الغربية", ["غزة والضفة الغربية", "غزة، الضفة الغربية"]) == 1.0
    assert items_found("سوريا", ["سوريا"]) is None


def test_answer_written_counts_every_item_of_a_list_and_no_decision():
    sentence = "زار بوتين الدوحة وأبوظبي والرياض في جولة خليجية."
    assert answer_written(sentence, ["الدوحة"]) is True
    assert answer_written(sentence, ["الدوحة، أبوظبي، الرياض"]) is True  # the items, apart in the text
    assert answer_written(sentence, ["الدوحة، مسقط"]) is False
    assert answer_written(sentence, ["لا"]) is None  # a decision: no sentence writes it
    assert answer_written("لا يزور", ["نعم"]) is None


def test_retrieval_and_citation_scores():
    ranked = ["b.txt", "a.txt", "b.txt", "c.txt"]
    assert recall_at(ranked, ["a.txt"], 1) == 0.0
    assert recall_at(ranked, ["a.txt"], 3) == 1.0
    assert recall_at(ranked, ["a.txt", "d.txt"], 4) == 0.5
    assert reciprocal_rank(ranked, ["a.txt", "c.txt"]) == 0.5
    assert reciprocal_rank(ranked, ["d.txt"]) == 0.0
    assert citation_scores(["a.txt", "b.txt"], ["a.txt"]) == (0.5, 1.0)
    assert citation_scores([], ["a.txt"]) == (None, 0.0)


def test_mean_and_percentile_skip_missing_values():
    assert mean([True, False, None, 1.0]) == pytest.approx(2 / 3, abs=1e-4)
    assert mean([None]) is None
    assert percentile([1.0, 2.0, 3.0, None], 50) == 2.0
    assert percentile([], 95) is None


def test_query_cache_serves_the_same_passages_as_assistant_search(fake_assistant):
    question = "متى زار بوتين الدوحة؟"
    cache = evaluate.QueryCache(fake_assistant.embedder)
    cache.prefill([question])
    calls = fake_assistant.embedder.calls
    scored = evaluate.score_retrieval(fake_assistant, cache, question, ["a_visit.txt"], (1, 3))
    assert fake_assistant.embedder.calls == calls  # three modes, no new embedding
    for mode in evaluate.MODES:
        expected = [p.chunk.id for p in fake_assistant.search(question, k=3, mode=mode)]
        assert [p["id"] for p in scored[mode]["passages"]] == expected
    assert scored["hybrid"]["recall@1"] == scored["hybrid"]["rr"] == 1.0


GOLD = [
    {"id": "g1", "question": "متى زار بوتين الدوحة أول مرة كرئيس؟", "answer": "2007", "aliases": ["فبراير 2007"],
     "sources": ["a_visit.txt"], "answerable": True, "category": "date"},
    {"id": "g2", "question": "متى بدأت العلاقات الدبلوماسية بين قطر وروسيا؟", "answer": "1988",
     "sources": ["c_relations.txt"], "answerable": True, "category": "date"},
    {"id": "g3", "question": "كم يبلغ عدد سكان اليابان؟", "answer": "", "sources": [], "answerable": False,
     "category": "unanswerable"},
]


@pytest.fixture
def gold_file(tmp_path: Path) -> Path:
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in GOLD), encoding="utf-8")
    return path


def test_gold_run_writes_records_summary_and_report(fake_assistant, gold_file, tmp_path):
    out = tmp_path / "results"
    summary = evaluate.run_gold(fake_assistant, gold_file, out)
    assert summary["name"] == "gold" and summary["questions"] == 3
    assert set(summary["retrieval"]) == {"bm25", "dense", "hybrid"}
    assert summary["retrieval"]["hybrid"]["n"] == 2 and summary["retrieval"]["hybrid"]["recall@5"] == 1.0
    answers = summary["answers"]
    assert answers["answerable"] == 2 and answers["unanswerable"] == 1
    assert answers["correct"] == 0.5  # the scripted model says 2007 to both answerable questions
    assert answers["refusal_accuracy"] == 1.0
    assert answers["latency"]["total_p50"] is not None
    assert set(summary["categories"]) == {"date", "unanswerable"}
    assert summary["failures"] == ["g2"] and summary["sources_not_indexed"] == []
    assert summary["generator"] == "scripted" and summary["embedder"] == HashEmbedder.id
    assert summary["settings"]["top_k"] == 3 and summary["machine"]["cpus"] >= 1

    records = [json.loads(line) for line in next(out.glob("runs/gold-2*.jsonl")).read_text("utf-8").splitlines()]
    assert [r["id"] for r in records] == ["g1", "g2", "g3"]
    first = records[0]
    assert first["contains"] and not first["refused"] and first["citations"][0]["source"] == "a_visit.txt"
    assert first["citation_precision"] == first["citation_recall"] == 1.0
    answered = [r for r in records if r["answerable"] and not r["refused"]]
    assert answers["citation_precision"] == mean(r["citation_precision"] for r in answered)
    assert not records[1]["correct"]  # g2: refused, or answered 2007 from the wrong article
    assert first["retrieval"]["dense"]["passages"][0]["id"].startswith("a_visit.txt#")
    assert "total" in first["timings"] and first["raw"].startswith("في فبراير")
    assert evaluate.shown_answer({**first, "refused": True}) == "(refused; the model said: في فبراير عام 2007 [1].)"
    assert evaluate.shown_answer({**first, "refused": True, "raw": ""}) == "(refused before generating)"
    assert json.loads((out / "gold.json").read_text("utf-8"))["failures"] == ["g2"]
    report = (out / "gold.md").read_text("utf-8")
    assert "## Failures (1)" in report and "| g2 |" in report and "recall@5" in report
    assert summary["revision"].startswith("rag ")  # the package's version: the package runs no git
    [line] = [json.loads(line) for line in (out / "history.jsonl").read_text("utf-8").splitlines()]
    assert line["name"] == "gold" and line["revision"] == summary["revision"] and line["correct"] == 0.5
    assert sorted(p.name for p in out.iterdir()) == ["gold.json", "gold.md", "history.jsonl", "runs"]


def test_a_second_run_overwrites_the_report_and_adds_a_line_to_the_history(fake_assistant, gold_file, tmp_path):
    evaluate.run_gold(fake_assistant, gold_file, tmp_path, retrieval_only=True, revision="abc123")
    evaluate.run_gold(fake_assistant, gold_file, tmp_path, retrieval_only=True, revision="def456")
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text("utf-8").splitlines()]
    assert [line["revision"] for line in history] == ["abc123", "def456"]
    assert json.loads((tmp_path / "gold-retrieval.json").read_text("utf-8"))["revision"] == "def456"
    assert len(list((tmp_path / "runs").glob("gold-retrieval-*.jsonl"))) >= 1


def test_gold_retrieval_only_with_limit_asks_nothing(fake_assistant, gold_file, tmp_path):
    summary = evaluate.run_gold(fake_assistant, gold_file, tmp_path, retrieval_only=True, limit=2)
    assert summary["name"] == "gold-retrieval-limit2" and summary["questions"] == 2
    assert summary["answers"] is None and summary["generator"] is None
    assert fake_assistant.generator.prompts == []
    assert (tmp_path / "gold-retrieval-limit2.md").exists()


def test_cli_eval_dispatches_to_gold_mode(fake_assistant, gold_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate.Assistant, "load", classmethod(lambda cls, config: fake_assistant))
    code = cli.main(["eval", "--gold", str(gold_file), "--out", str(tmp_path / "r"), "--retrieval-only"])
    assert code == 0
    assert "hybrid: recall@1" in capsys.readouterr().out
    assert (tmp_path / "r" / "gold-retrieval.json").exists()


def test_cli_eval_needs_its_questions_and_a_folder_for_the_report(hash_cli, gold_file, tmp_path, capsys):
    assert cli.main(["eval", "--gold", str(gold_file)]) == 2
    assert cli.main(["eval", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: give the folder for the report: --out DIR (e.g. evals/results)",
        "error: give the questions: --gold FILE (e.g. evals/gold-test.jsonl) or --squad FILE",
    ]
    assert not (tmp_path / "r").exists()


SQUAD = {"data": [
    {"title": "قطر", "paragraphs": [
        {"context": "الدوحة هي عاصمة دولة قطر وأكبر مدنها، وتقع على ساحل الخليج العربي.",
         "qas": [{"id": "s1", "question": "ما عاصمة قطر؟", "answers": [{"text": "الدوحة", "answer_start": 0}]}]},
        {"context": "تأسس الاتحاد الروسي بعد تفكك الاتحاد السوفيتي في ديسمبر عام 1991.",
         "qas": [{"id": "s2", "question": "متى تفكك الاتحاد السوفيتي؟",
                  "answers": [{"text": "1991", "answer_start": 0}, {"text": "ديسمبر عام 1991", "answer_start": 0}]}]},
    ]},
    {"title": "copy", "paragraphs": [
        {"context": "الدوحة هي عاصمة دولة قطر وأكبر مدنها، وتقع على ساحل الخليج العربي.",
         "qas": [{"id": "s3", "question": "على أي ساحل تقع الدوحة؟",
                  "answers": [{"text": "الخليج العربي", "answer_start": 0}]}]},
    ]},
]}


@pytest.fixture
def squad_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(SQUAD, ensure_ascii=False), encoding="utf-8")
    return path


def test_squad_retrieval_only(squad_file, fake_config, tmp_path):
    summary = evaluate.run_squad(squad_file, tmp_path / "out", fake_config, embedder=HashEmbedder(), sample=0)
    assert summary["name"] == "squad-tiny-retrieval" and summary["questions"] == 3
    assert summary["index"]["paragraphs"] == 2  # the repeated paragraph is one article
    assert summary["retrieval"]["hybrid"]["recall@10"] == 1.0
    assert summary["retrieval"]["bm25"]["recall@1"] == 1.0
    assert summary["answers"] is None and summary["sample"] == 0
    records = [json.loads(line) for line in next((tmp_path / "out" / "runs").glob("*.jsonl")).read_text("utf-8")
               .splitlines()]
    assert records[0]["sources"] == records[2]["sources"] == ["p00000.txt"]
    assert records[1]["answers"] == ["1991", "ديسمبر عام 1991"]
    assert (tmp_path / "out" / "squad-tiny-retrieval.md").exists()


def test_squad_answers_a_seeded_sample(squad_file, fake_config, tmp_path):
    def reply(messages: list[dict]) -> str:
        if "السوفيتي" in messages[-1]["content"].split("السؤال")[-1]:
            return "تفكك الاتحاد السوفيتي في ديسمبر عام 1991 [1]."
        return "عاصمة قطر هي الدوحة [1]."

    summary = evaluate.run_squad(squad_file, tmp_path, fake_config, embedder=HashEmbedder(),
                                 generator=ScriptedGenerator(reply), sample=2, seed=1)
    assert summary["name"] == "squad-tiny" and summary["sample"] == 2 and summary["generator"] == "scripted"
    records = [json.loads(line) for line in next(tmp_path.glob("runs/*.jsonl")).read_text("utf-8").splitlines()]
    asked = [r for r in records if "answer" in r]
    assert len(asked) == summary["answers"]["n"] == 2
    assert summary["answers"]["contains"] == mean(r["contains"] for r in asked) > 0


def test_squad_with_a_split_answers_only_its_questions(squad_file, fake_config, tmp_path):
    summary = evaluate.run_squad(squad_file, tmp_path, fake_config, embedder=HashEmbedder(),
                                 generator=ScriptedGenerator("الدوحة [1]."), sample=5, ids={"s3", "other"})
    records = [json.loads(line) for line in next(tmp_path.glob("runs/*.jsonl")).read_text("utf-8").splitlines()]
    assert [r["id"] for r in records if "answer" in r] == ["s3"] and summary["split"] == 1
    assert summary["questions"] == 3  # retrieval is still measured over every question
    with pytest.raises(RagError, match="none of the 1 ids"):
        evaluate.run_squad(squad_file, tmp_path, fake_config, embedder=HashEmbedder(), sample=5, ids={"x"})


def test_the_split_files_are_disjoint_and_cover_tydi():
    split = {name: set((PACKAGE_ROOT / "evals" / "splits" / f"{name}.ids").read_text().split())
             for name in ("tydi-ar-train", "tydi-ar-heldout", "arcd-train")}
    assert not split["tydi-ar-train"] & split["tydi-ar-heldout"]
    assert len(split["tydi-ar-train"] | split["tydi-ar-heldout"]) == 921 and len(split["arcd-train"]) == 693
    assert 0.18 < len(split["tydi-ar-heldout"]) / 921 < 0.22


@pytest.mark.real
def test_real_gold_subset(real_assistant, tmp_path):
    summary = evaluate.run_gold(real_assistant, PACKAGE_ROOT / "evals" / "gold-dev.jsonl", tmp_path, limit=5)
    assert summary["questions"] == 5 and summary["answers"]["n"] == 5
    for key in ("correct", "f1", "exact", "citation_precision", "refusal_accuracy", "false_refusal_rate", "latency"):
        assert key in summary["answers"]
    assert summary["retrieval"]["hybrid"]["recall@5"] >= 0.8
    assert (tmp_path / "gold-dev-limit5.md").exists()
    assert summary["answers"]["evidence_hit"] is not None


def test_a_correct_answer_holds_the_reference_and_is_short():
    assert metrics.short("في فبراير عام 2007 [1].", ["2007"])
    long = "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007 وهي أول زيارة له إلى قطر كرئيس"
    assert not metrics.short(long, ["2007"])  # 19 words for a one-word fact
    assert metrics.short(long, ["قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007"])


def test_squad_gold_passage_mode_reads_each_questions_own_paragraph(squad_file, tmp_path, fake_config):
    summary = evaluate.run_squad(squad_file, tmp_path, fake_config, embedder=HashEmbedder(),
                                 generator=ScriptedGenerator("الدوحة"), sample=2, seed=1, gold_passage=True)
    assert summary["name"] == "squad-tiny-goldp" and summary["gold_passage"]
    records = [json.loads(line) for line in next(tmp_path.glob("runs/squad-tiny-goldp-2*.jsonl")).read_text("utf-8")
               .splitlines()]
    asked = [r for r in records if "answer" in r]
    assert len(asked) == 2
    for record in asked:  # one passage, the question's own paragraph, whatever retrieval found
        assert record["passages"] == [record["sources"][0] + "#gold"]


# --- Input files are checked: one line naming the line (or place) and the field --------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["id", "question", "answer", "sources", "answerable",
                                                              "aliases", "category", "data", "paragraphs", "context",
                                                              "qas", "answers", "text"]), inner, max_size=5),
                           max_leaves=12)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[1, 2]", "line 2: not a gold question: a list, not an object"),
        ('{"id": "q", "question": "س؟", "sources": [], "answerable": true}', "line 2: not a gold question: no answer"),
        ('{"id": "q", "question": "س؟", "sources": "a.txt", "answerable": false}',
         "line 2: not a gold question: sources is text, not a list"),
        ('{"id": "q", "question": "س؟", "sources": [1], "answerable": false}',
         "line 2: not a gold question: sources[0] is a whole number, not text"),
        ('{"id": "q", "question": "س؟", "answer": "ج", "sources": [], "answerable": "yes"}',
         "line 2: not a gold question: answerable is text, not true or false"),
        ('{"id": "q", "question": "س؟", "sources": [], "answerable": false, "aliases": "ج"}',
         "line 2: not a gold question: aliases is text, not a list"),
        ("{" * 100_000, "line 2: not JSON text"),
    ],
)
def test_a_bad_gold_line_is_one_error_naming_the_line_and_field(gold_file, line, problem):
    lines = gold_file.read_text(encoding="utf-8").splitlines()
    gold_file.write_text("\n".join([lines[0], line, *lines[1:]]), encoding="utf-8")
    with pytest.raises(RagError) as error:
        evaluate.load_gold(gold_file)
    assert str(error.value) == f"{gold_file} {problem}"


@given(st.lists(json_values, min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_any_json_lines_are_gold_questions_or_one_line_error(rows):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "gold.jsonl"
        path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
        try:
            questions = evaluate.load_gold(path)
        except RagError as e:
            assert "\n" not in str(e) and " line " in str(e)
            return
    assert all(isinstance(q["question"], str) and isinstance(q["sources"], list) for q in questions)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_any_json_is_a_squad_file_or_its_problem_is_named(data):
    problem = evaluate.shape_problem(data, evaluate.SQUAD_SHAPE)
    if problem is None:
        with tempfile.TemporaryDirectory() as folder:  # the questions of a file of that shape can be taken
            evaluate.squad_questions(data, Path(folder), "x")
    else:
        assert "\n" not in problem


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[]", "a list, not an object"),
        ('{"data": {}}', "data is an object, not a list"),
        ('{"data": [{"paragraphs": [{"context": "نص", "qas": [{"id": "1", "answers": []}]}]}]}',
         "no data[0].paragraphs[0].qas[0].question"),
        ('{"data": [{"paragraphs": [{"context": "نص", "qas": [{"id": "1", "question": "س", "answers": [5]}]}]}]}',
         "data[0].paragraphs[0].qas[0].answers[0] is a whole number, not an object"),
    ],
)
def test_a_bad_squad_file_is_one_error_naming_the_place(tmp_path, fake_config, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RagError) as error:
        evaluate.run_squad(path, tmp_path / "out", fake_config, embedder=HashEmbedder(), sample=0)
    assert str(error.value) == f"SQuAD file {path}: {problem}"


def test_rag_eval_input_files_that_are_not_files_are_one_line(hash_cli, tmp_path, capsys):
    (tmp_path / "folder.jsonl").mkdir()
    assert cli.main(["eval", "--gold", str(tmp_path / "folder.jsonl"), "--out", str(tmp_path / "r")]) == 2
    assert cli.main(["eval", "--squad", "/dev/zero", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: gold file {tmp_path / 'folder.jsonl'} is a folder, not a file",
        "error: SQuAD file /dev/zero is not a regular file (a device, pipe or socket)",
    ]
