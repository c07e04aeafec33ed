"""`rag eval`: score retrieval, answers, citations, refusals and latency on gold Q&A pairs or a SQuAD-format file."""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from rag.assistant import Assistant, check_question
from rag.chunk import Chunk
from rag.config import Config
from rag.embedders import Embedder, make_embedder
from rag.errors import RagError
from rag.files import MB, read_input_text
from rag.generators import Generator
from rag.metrics import (
    answer_written,
    citation_scores,
    contains,
    exact_match,
    items_found,
    mean,
    percentile,
    recall_at,
    reciprocal_rank,
    short,
    token_f1,
)
from rag.normalize import fold_script
from rag.report import cell, machine, package_version, table, write_report
from rag.retrieve import Passage, search
from rag.rows import row_problem, shape_problem

MODES = ("bm25", "dense", "hybrid")
GOLD_KS = (1, 3, 5)
SQUAD_KS = (1, 5, 10)
MAX_INPUT_BYTES = 100 * MB  # a gold or SQuAD file (SQuAD 2.0's training set is 40 MB)
# What is read from the input files (rag.rows shapes): a gold question per line (an answer when answerable) ...
GOLD_SHAPE = {"id": str | int, "question": str, "sources": [str], "answerable": bool}
GOLD_OPTIONAL = {"aliases": [str], "category": str}
# ... and a SQuAD file: articles of paragraphs, each with its questions and their answers.
SQUAD_SHAPE = {"data": [{"paragraphs": [{"context": str, "qas": [{"id": str | int, "question": str,
                                                                 "answers": [{"text": str}]}]}]}]}


# One question: retrieval with every mode, then (optionally) the full answer.


class QueryCache:
    """Wraps an embedder: the questions of a run are embedded in batches once, then served to every search."""

    def __init__(self, embedder: Embedder, batch: int = 32):
        self.embedder, self.id, self.dims, self.batch = embedder, embedder.id, embedder.dims, batch
        self.vectors: dict[str, np.ndarray] = {}

    def prefill(self, questions: list[str]) -> None:
        """Embed the questions as `rag.retrieve.search` does (script-folded, 'query' prompt), in batches."""
        texts = list(dict.fromkeys(fold_script(q) for q in questions))
        for at in range(0, len(texts), self.batch):
            part = texts[at : at + self.batch]
            self.vectors |= zip(part, self.embedder.embed_batch(part, "query"), strict=True)

    def embed_batch(self, texts: list[str], kind: str) -> np.ndarray:
        """Cached query vectors; anything else goes to the wrapped embedder."""
        if kind == "query" and all(t in self.vectors for t in texts):
            return np.stack([self.vectors[t] for t in texts])
        return self.embedder.embed_batch(texts, kind)


def score_retrieval(assistant: Assistant, embedder: Embedder, question: str, gold: list[str],
                    ks: tuple[int, ...]) -> dict:
    """Retrieved passages and recall@k / reciprocal rank for each retrieval mode (one search of max(ks) per mode).

    This is `assistant.search(question, k, mode)` with the query vectors of a QueryCache.
    """
    question = check_question(question, assistant.config.max_question_chars)
    out = {}
    for mode in MODES:
        # The first k of a search for max(ks) passages are the search for k: both rank the same 50 candidates.
        passages = search(assistant.store, embedder, question, max(ks), mode)
        ranked = [p.chunk.article_id for p in passages]
        out[mode] = {
            "passages": [{"id": p.chunk.id, "score": round(p.score, 5)} for p in passages],
            **({f"recall@{k}": recall_at(ranked, gold, k) for k in ks} if gold else {}),
            **({"rr": reciprocal_rank(ranked, gold)} if gold else {}),
        }
    return out


def score_answer(assistant: Assistant, question: str, references: list[str], gold: list[str],
                 passages: list | None = None) -> dict:
    """Ask the assistant (reading the given passages, if any, instead of retrieving) and score its answer:
    correct = holds the reference (or every list item) and is short; exact match and token F1 of the copied span
    (the shown text for the free reader); the lenient 'contains'; citations, refusal, the answer-bearing sentence
    among what the reader was given, and timings."""
    answer = assistant.ask(question, passages=passages)
    cited = [c.source for c in answer.citations]
    precision, recall = citation_scores(cited, gold) if gold and not answer.refused else (None, None)
    text = "" if answer.refused else answer.text
    span = "" if answer.refused else (answer.span or answer.text)
    items = items_found(text, references)
    found = contains(text, references)
    given = " ".join(ev.text for ev in answer.evidence)
    return {
        "answer": answer.text,
        "span": answer.span,
        "raw": answer.raw,  # the model's own reply ('' when refused before reading)
        "refused": answer.refused,
        "kind": answer.kind,
        "confidence": answer.confidence,
        "citations": [{"n": c.n, "source": c.source, "supported": c.supported, "score": c.score}
                      for c in answer.citations],
        "passages": [p.chunk.id for p in answer.passages],
        "timings": {k: round(v, 3) for k, v in answer.timings.items()},
        "exact": exact_match(span, references) if references else None,
        "contains": found if references else None,
        "f1": round(token_f1(span, references), 4) if references else None,
        "items": items,
        "short": short(text, references) if references and text else None,
        "correct": bool((found or items == 1.0) and short(text, references)) if references else answer.refused,
        "evidence_hit": answer_written(given, references) if answer.evidence else None,
        "citation_precision": precision,
        "citation_recall": recall,
    }


# Summaries of many records.


def summarize_retrieval(records: list[dict], ks: tuple[int, ...]) -> dict:
    """Mean recall@k and MRR per retrieval mode over the questions that have gold sources."""
    scored = [r for r in records if r["sources"]]
    return {
        mode: {
            "n": len(scored),
            **{f"recall@{k}": mean(r["retrieval"][mode][f"recall@{k}"] for r in scored) for k in ks},
            "mrr": mean(r["retrieval"][mode]["rr"] for r in scored),
        }
        for mode in MODES
    }


def summarize_answers(records: list[dict]) -> dict | None:
    """Answer, citation, refusal and latency figures over the records that were answered."""
    asked = [r for r in records if "answer" in r]
    if not asked:
        return None
    answerable = [r for r in asked if r["answerable"]]
    unanswerable = [r for r in asked if not r["answerable"]]
    answered = [r for r in answerable if not r["refused"]]
    citations = [c for r in asked if not r["refused"] for c in r["citations"]]
    return {
        "n": len(asked),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "exact": mean(r["exact"] for r in answerable),
        "contains": mean(r["contains"] for r in answerable),
        "f1": mean(r["f1"] for r in answerable),
        "list_items": mean(r["items"] for r in answerable),
        "correct": mean(r["correct"] for r in answerable),
        "evidence_hit": mean(r.get("evidence_hit") for r in answerable),
        "citation_precision": mean(r["citation_precision"] for r in answered),
        "citation_recall": mean(r["citation_recall"] for r in answered),
        "citation_supported": mean(c["supported"] for c in citations),
        "refusal_accuracy": mean(r["refused"] for r in unanswerable),
        "false_refusal_rate": mean(r["refused"] for r in answerable),
        "latency": {
            f"{name}_{label}": percentile((r["timings"].get(name) for r in asked), q)
            for name in ("first_token", "total")
            for label, q in (("p50", 50), ("p95", 95))
        },
    }


def summarize_categories(records: list[dict], ks: tuple[int, ...]) -> dict:
    """Hybrid retrieval and answer figures per question category."""
    out = {}
    for category in sorted({r["category"] for r in records}):
        rows = [r for r in records if r["category"] == category]
        with_sources = [r for r in rows if r["sources"]]
        asked = [r for r in rows if "answer" in r]
        out[category] = {
            "n": len(rows),
            f"recall@{max(ks)}": mean(r["retrieval"]["hybrid"][f"recall@{max(ks)}"] for r in with_sources),
            "mrr": mean(r["retrieval"]["hybrid"]["rr"] for r in with_sources),
            "correct": mean(r["correct"] for r in asked),
            "f1": mean(r["f1"] for r in asked),
            "refused": mean(r["refused"] for r in asked),
        }
    return out


def failure_reason(record: dict, k: int) -> str | None:
    """Why a question counts as failed ('retrieval miss', 'refused', 'wrong answer', 'not refused'), or None."""
    reasons = []
    if "answer" in record and not record["correct"]:
        wrong = "refused" if record["refused"] else "wrong answer"
        reasons.append(wrong if record["answerable"] else "not refused")
    if record["sources"] and record["retrieval"]["hybrid"][f"recall@{k}"] < 1:
        reasons.append("retrieval miss")
    return ", ".join(reasons) or None


def run_info(assistant: Assistant, answered: bool, revision: str | None = None) -> dict:
    """Revision (a commit given by the caller, else the package's version), models, settings and machine of a run
    (loads the generator when answers are asked for)."""
    c = assistant.config
    return {
        "revision": revision or package_version(),
        "embedder": assistant.embedder.id,
        "generator": assistant.generator.id if answered else None,
        "settings": {"top_k": c.top_k, "chunk_size": c.chunk_size, "chunk_overlap": c.chunk_overlap,
                     "evidence": c.evidence, "evidence_sentences": c.evidence_sentences,
                     "evidence_share": c.evidence_share, "n_ctx": c.n_ctx, "max_tokens": c.max_tokens,
                     "temperature": c.temperature, "n_threads": c.n_threads, "n_threads_batch": c.n_threads_batch,
                     "n_gpu_layers": c.n_gpu_layers},
        "machine": machine(),
    }


def gold_passage(store, source: str) -> Passage:
    """An article whole as the one passage a reader gets (reader-only evaluation: no retrieval, no gate)."""
    article = store.article(source)
    return Passage(Chunk(f"{source}#gold", source, article.title, article.date, 0, len(article.text), article.text),
                   1.0, 1.0, 0.0)


def evaluate(assistant: Assistant, questions: list[dict], ks: tuple[int, ...], answer: Iterable[int],
             reader_only: bool = False) -> list[dict]:
    """Records for questions (id, question, answers, sources, answerable, category); answer the given indexes,
    from retrieved passages or (reader_only) from the whole of each question's first source."""
    from tqdm import tqdm

    answer = set(answer)
    queries = QueryCache(assistant.embedder)
    queries.prefill([check_question(q["question"], assistant.config.max_question_chars) for q in questions])
    records = []
    for i, q in enumerate(tqdm(questions, desc="questions", unit="q", file=sys.stderr)):
        record = {**q, "retrieval": score_retrieval(assistant, queries, q["question"], q["sources"], ks)}
        if i in answer:
            given = [gold_passage(assistant.store, q["sources"][0])] if reader_only else None
            record |= score_answer(assistant, q["question"], q["answers"] if q["answerable"] else [], q["sources"],
                                   given)
        records.append(record)
    return records


def summarize(name: str, records: list[dict], ks: tuple[int, ...], info: dict, indexed: Iterable[str],
              seconds: float) -> dict:
    """The summary JSON of a run (info: from run_info; indexed: the article ids in the index)."""
    missing = sorted({s for r in records for s in r["sources"]} - set(indexed))
    return {
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "questions": len(records),
        "seconds": round(seconds, 1),
        **info,
        "sources_not_indexed": missing,
        "retrieval": summarize_retrieval(records, ks),
        "answers": summarize_answers(records),
        "categories": summarize_categories(records, ks),
        "failures": [r["id"] for r in records if failure_reason(r, max(ks))],
    }


# Output files.


def shown_answer(record: dict) -> str:
    """The answer of a record as the report shows it; for a refusal, what the model had said."""
    if "answer" not in record or not record["refused"]:
        return record.get("answer", "")
    raw = record["raw"].strip()
    return f"(refused; the model said: {raw})" if raw else "(refused before generating)"


def render_report(summary: dict, records: list[dict], ks: tuple[int, ...]) -> str:
    """A short Markdown report of a run."""
    k = max(ks)
    settings = ", ".join(f"{key}={value}" for key, value in summary["settings"].items())
    host = summary["machine"]
    lines = [
        f"# Evaluation: {summary['name']}",
        "",
        f"- {summary['created']}, {summary['questions']} questions, {summary['seconds']} s; {summary['revision']}",
        f"- embedder `{summary['embedder']}`, generator `{summary['generator']}`; {settings}",
        f"- machine: {host['cpus']} × {host['cpu_model']}, {host['platform']}, load average at start "
        f"{host['load_average']}"
        " (the cores are shared: latencies are upper bounds)",
        f"- per-question records: `runs/{summary['name']}-<time>.jsonl` beside this report",
    ]
    if summary["sources_not_indexed"]:
        lines.append(f"- gold sources missing from the index: {len(summary['sources_not_indexed'])}")
    lines += ["", "## Retrieval (article of the gold answer among the retrieved passages)", ""]
    lines += table(["mode", *(f"recall@{k}" for k in ks), "MRR", "questions"],
                   [[mode, *(m[f"recall@{k}"] for k in ks), m["mrr"], m["n"]]
                    for mode, m in summary["retrieval"].items()])
    a = summary["answers"]
    if a:
        lat = a["latency"]
        lines += ["", f"## Answers ({a['answerable']} answerable, {a['unanswerable']} unanswerable)", ""]
        lines += table(["metric", "value"], [
            ["correct (holds the answer, or every list item, in a short answer)", a["correct"]],
            ["exact match (span)", a["exact"]], ["token F1 (span)", a["f1"]],
            ["contains (lenient: any length)", a["contains"]],
            ["answer-bearing sentence given to the reader", a["evidence_hit"]],
            ["list items found", a["list_items"]],
            ["citation precision (article)", a["citation_precision"]],
            ["citation recall (article)", a["citation_recall"]],
            ["citations supported by the checker", a["citation_supported"]],
            ["refusal accuracy (unanswerable)", a["refusal_accuracy"]],
            ["false refusal rate (answerable)", a["false_refusal_rate"]],
            ["first token p50 / p95 (s)", f"{cell(lat['first_token_p50'])} / {cell(lat['first_token_p95'])}"],
            ["total p50 / p95 (s)", f"{cell(lat['total_p50'])} / {cell(lat['total_p95'])}"],
        ])
    lines += ["", "## Per category (hybrid retrieval)", ""]
    lines += table(["category", "n", f"recall@{k}", "MRR", "correct", "F1", "refused"],
                   [[name, c["n"], c[f"recall@{k}"], c["mrr"], c["correct"], c["f1"], c["refused"]]
                    for name, c in summary["categories"].items()])
    failed = [(r, failure_reason(r, k)) for r in records if failure_reason(r, k)]
    lines += ["", f"## Failures ({len(failed)})", ""]
    lines += table(["id", "category", "why", "question", "expected", "answer", f"hybrid top {k}"],
                   [[r["id"], r["category"], why, r["question"], " / ".join(r["answers"]) or "(refuse)",
                     shown_answer(r),
                     ", ".join(p["id"] for p in r["retrieval"]["hybrid"]["passages"])] for r, why in failed])
    return "\n".join(lines) + "\n"


def headline(summary: dict) -> dict:
    """The figures of a run that its line in the history keeps: hybrid retrieval, and the answers when asked."""
    k = max(GOLD_KS if "gold" in summary else SQUAD_KS)
    hybrid, a = summary["retrieval"]["hybrid"], summary["answers"] or {}
    answers = ("correct", "f1", "exact", "false_refusal_rate", "refusal_accuracy")
    return {"questions": summary["questions"], "hybrid_recall@1": hybrid["recall@1"],
            f"hybrid_recall@{k}": hybrid[f"recall@{k}"], "hybrid_mrr": hybrid["mrr"],
            **{name: a[name] for name in answers if name in a}}


def write_results(out: Path, summary: dict, records: list[dict], ks: tuple[int, ...]) -> Path:
    """The report of a run into out (rag.report.write_report): <name>.md and .json, a line in history.jsonl and
    the records in runs/; the report's path."""
    return write_report(out, summary["name"], render_report(summary, records, ks), summary, headline(summary),
                        summary["revision"], summary["machine"], records)


# The two modes.


def load_gold(path: Path) -> list[dict]:
    """Gold questions from a JSONL file, with the answer and its aliases as 'answers'; a one-line RagError naming the
    line and field of the first row that is not a gold question."""
    rows = []
    for n, line in enumerate(read_input_text(path, MAX_INPUT_BYTES, "gold file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as e:  # RecursionError: nested too deep for the parser
            raise RagError(f"{path} line {n}: not JSON text") from e
        answerable = isinstance(row, dict) and row.get("answerable") is True
        if problem := row_problem(row, GOLD_SHAPE | ({"answer": str} if answerable else {}), GOLD_OPTIONAL):
            raise RagError(f"{path} line {n}: not a gold question: {problem}")
        answers = [row["answer"], *row.get("aliases", [])] if answerable else []
        rows.append({"id": row["id"], "question": row["question"], "answers": [a for a in answers if a],
                     "sources": row["sources"], "answerable": answerable, "category": row.get("category", "")})
    return rows


def _name(base: str, retrieval_only: bool, limit: int | None) -> str:
    return base + ("-retrieval" if retrieval_only else "") + (f"-limit{limit}" if limit else "")


def run_gold(assistant: Assistant | Callable[[], Assistant], gold: Path, out: Path, retrieval_only: bool = False,
             limit: int | None = None, revision: str | None = None) -> dict:
    """Evaluate the assistant on a gold JSONL file and write the results into out. The assistant may be given as a
    function that loads it: it is then loaded once the gold file is known to be good. The revision (a commit)
    defaults to the package's version."""
    started = time.perf_counter()
    questions = load_gold(gold)[:limit]
    assistant = assistant() if callable(assistant) else assistant
    info = run_info(assistant, not retrieval_only, revision)  # loads the generator first: no load time in the latencies
    records = evaluate(assistant, questions, GOLD_KS, [] if retrieval_only else range(len(questions)))
    indexed = assistant.store.manifest()["articles"]
    summary = summarize(_name(Path(gold).stem, retrieval_only, limit), records, GOLD_KS, info, indexed,
                        time.perf_counter() - started)
    summary["gold"] = str(gold)
    summary["path"] = str(write_results(Path(out), summary, records, GOLD_KS))
    return summary


def squad_questions(data: dict, seeds: Path, category: str) -> list[dict]:
    """Write each distinct paragraph of a SQuAD-format dataset as an article; its questions, with that source."""
    files: dict[str, str] = {}
    questions = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            if context not in files:
                files[context] = f"p{len(files):05d}.txt"
                (seeds / files[context]).write_text(context, encoding="utf-8")
            for qa in paragraph["qas"]:
                answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                questions.append({"id": qa["id"], "question": qa["question"], "answers": answers,
                                  "sources": [files[context]], "answerable": True, "category": category})
    return questions


def run_squad(path: Path, out: Path, config: Config, embedder: Embedder | None = None,
              generator: Generator | None = None, sample: int = 50, limit: int | None = None,
              seed: int = 0, gold_passage: bool = False, ids: set[str] | None = None,
              revision: str | None = None) -> dict:
    """Index every paragraph of a SQuAD-format file (a paragraph is an article), retrieve for every question,
    answer a seeded random sample of them (of the questions in ids, when given: a held-out split), from the
    retrieved passages or with gold_passage from the question's own paragraph, as published reader figures are, and
    write the results into out."""
    from rag.index import build_index
    from rag.stores import make_store

    started = time.perf_counter()
    try:
        data = json.loads(read_input_text(path, MAX_INPUT_BYTES, "SQuAD file"))
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deep for the parser
        raise RagError(f"SQuAD file {path} is not JSON text ({type(e).__name__}: {e})") from e
    if problem := shape_problem(data, SQUAD_SHAPE):
        raise RagError(f"SQuAD file {path}: {problem}")
    name = Path(path).name.removesuffix(".json")
    work = Path(tempfile.mkdtemp(prefix="rag-squad-"))
    try:
        (work / "seeds").mkdir()
        questions = squad_questions(data, work / "seeds", name)[:limit]
        # A benchmark's index is a temporary FAISS folder, whatever store the user's config names.
        config = config.replace(seeds_dir=work / "seeds", index_dir=work / "index", store="faiss")
        embedder = embedder or make_embedder(config)
        store = make_store(config)
        report = build_index(config.seeds_dir, store, embedder, config.chunk_size, config.chunk_overlap,
                             log=lambda msg: print(msg, file=sys.stderr))
        assistant = Assistant(config, embedder, store, generator)
        indexed = set(store.manifest()["articles"])
        pool = [i for i, q in enumerate(questions) if ids is None or str(q["id"]) in ids]
        if ids is not None and not pool:
            raise RagError(f"none of the {len(ids)} ids of the split is a question of {path}")
        asked = sorted(random.Random(seed).sample(pool, min(sample, len(pool))))
        info = run_info(assistant, bool(asked), revision)
        info["index"] = {"paragraphs": len(list((work / "seeds").iterdir())), "articles": len(indexed),
                         "chunks": report.chunks, "seconds": report.seconds, "skipped": report.warnings}
        records = evaluate(assistant, questions, SQUAD_KS, asked, reader_only=gold_passage)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = f"squad-{name}" + ("-goldp" if gold_passage else "")
    summary = summarize(_name(base, not asked, limit), records, SQUAD_KS, info, indexed,
                        time.perf_counter() - started)
    summary |= {"squad": str(path), "sample": len(asked), "seed": seed, "gold_passage": gold_passage,
                "split": None if ids is None else len(pool)}
    summary["path"] = str(write_results(Path(out), summary, records, SQUAD_KS))
    return summary


def main(args, config: Config) -> None:
    """`rag eval`: --gold or --squad mode; prints where the results went and the headline figures."""
    if not args.out:
        raise RagError("give the folder for the report: --out DIR (e.g. evals/results)")
    if args.squad:
        sample = 0 if args.retrieval_only else args.sample
        ids = None if args.ids is None else set(read_input_text(args.ids, MAX_INPUT_BYTES, "ids file").split())
        summary = run_squad(args.squad, args.out, config, sample=sample, limit=args.limit,
                            gold_passage=args.gold_passage, ids=ids)
    elif args.gold:
        summary = run_gold(lambda: Assistant.load(config), args.gold, args.out, args.retrieval_only, args.limit)
    else:
        raise RagError("give the questions: --gold FILE (e.g. evals/gold-test.jsonl) or --squad FILE")
    k = max(SQUAD_KS if args.squad else GOLD_KS)
    for mode, m in summary["retrieval"].items():
        print(f"{mode:>6}: recall@1 {m['recall@1']}, recall@{k} {m[f'recall@{k}']}, MRR {m['mrr']}")
    if summary["answers"]:
        a = summary["answers"]
        print(f"answers: correct {a['correct']}, F1 {a['f1']}, exact {a['exact']}, "
              f"false refusals {a['false_refusal_rate']}, refusal accuracy {a['refusal_accuracy']}")
    print(f"results: {summary['path']} (the run's line in history.jsonl, its records in runs/)")
