"""Ablation of the reader, side by side in one run: the old fixed order of the reader's rules, each way of proposing
candidates alone, the trained selector, the selector retrained without each feature group, and the oracle (the best
candidate, knowing the answer), on the gold dev and test splits (through retrieval), XQuAD-ar and the TyDi-ar
held-out split (each question with its own paragraph). The model reads each question once; every row chooses among
the same candidates. With --judge N, also the selector with a judge trained here (the model's log-probability of
its best N candidates), and the answer time of the whole assistant with and without it, on gold test questions
asked in turns. Writes evals/results/ablation.md and ablation.json, and the run's line in history.jsonl
(rag.report).

    .venv/bin/python evals/ablation.py        # about 60 minutes on 2 cores; the model's proposals are cached
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from rag.answer_types import LIST, YESNO, defines
from rag.assistant import Assistant
from rag.config import CACHE_DIR, load_config
from rag.evaluate import load_gold
from rag.generators import make_generator
from rag.metrics import percentile
from rag.reading.candidates import Candidate, Proposal, invented, says_none, typed_spans
from rag.reading.features import GROUPS
from rag.reading.selector import load_selector
from rag.reading.train import (
    Judgements,
    ParagraphIdf,
    alone,
    collect,
    draw,
    fit,
    gold_examples,
    judgements_file,
    oracle,
    proposals_file,
    ranked_by,
    score,
    squad_examples,
    training_files,
    with_selector,
)
from rag.report import commit, machine, table, write_report

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHMARKS = HERE.parent.parent / "shared" / "benchmarks"  # the project's shared/ beside the checkout
COLUMNS = ["correct", "exact", "f1", "false_refusals", "unanswerable_refused", "citation_precision", "evidence_hit",
           "read_hit"]
MIN_COPY_LOGPROB = -3.0  # the old reader refused a copied span below this mean log-probability per token


def rules(record: dict, proposal: Proposal) -> Candidate | None:
    """The old reader's fixed order: yes/no and place lists first, nothing when the model said so or named what the
    evidence lacks, then the definition, the reply snapped onto the evidence, the copy."""
    def first(source: str) -> Candidate | None:
        return next((c for c in proposal.candidates if source in c.sources), None)

    if proposal.kind in (YESNO, LIST) and (found := first("yesno" if proposal.kind == YESNO else "list")):
        return found
    typed = typed_spans(proposal.evidence, proposal.kind, proposal.question)
    if says_none(proposal.raw) or invented(proposal.raw, typed, proposal.kind):
        return None
    found = defines(proposal.question) and first("definition") or first("reply")
    if found:
        return found
    copied = first("copy")
    return copied if copied and proposal.copy_logprob >= MIN_COPY_LOGPROB else None


def squad_set(file: str, ids: Path | None, sample: int | None, seed: int, group: str):
    """A SQuAD-format benchmark's questions (of a split, or a seeded sample), and the idf of its paragraphs."""
    data = json.loads((BENCHMARKS / file).read_text(encoding="utf-8"))
    every = {str(qa["id"]) for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]}
    wanted = set(ids.read_text(encoding="utf-8").split()) if ids else every
    examples = squad_examples(data, wanted, group)
    if sample and sample < len(examples):
        examples = sorted(random.Random(seed).sample(examples, sample), key=lambda e: e.id)
    return examples, ParagraphIdf(p["context"] for a in data["data"] for p in a["paragraphs"])


def tables(results: dict) -> list[str]:
    """One markdown table per set: a row per chooser."""
    lines = []
    for name, rows in results.items():
        lines += [f"### {name}", "", *table(["chooser", *COLUMNS], [[chooser, *(figures[c] for c in COLUMNS)]
                                                                      for chooser, figures in rows.items()]), ""]
    return lines


def answer_times(assistants: dict[str, Assistant], questions: list[str]) -> dict[str, dict[str, float]]:
    """p50 and p95 of the answer time of each assistant over the questions, asked by each in turn."""
    seconds: dict[str, list[float]] = {name: [] for name in assistants}
    for question in questions:
        for name, assistant in assistants.items():
            seconds[name].append(assistant.ask(question).timings["total"])
    return {name: {f"p{q}": percentile(values, q) for q in (50, 95)} for name, values in seconds.items()}


def trained_on(records: list[dict], settings: dict) -> list[dict]:
    """The records of the examples the selector was trained on, drawn again from its manifest's settings (the cache
    may hold more: another run's larger sample), so that the variants are retrained on the same ones."""
    files = training_files(HERE.parent.parent / "shared", HERE / "splits")
    drawn = {(e.group, e.id) for e in draw(files, settings["per_set"], settings["negatives"], settings["seed"],
                                           settings.get("removed", 0.0))}
    groups = {"gold-dev"} | ({"gold-dev-neg"} if settings.get("elsewhere") else set())
    return [r for r in records if (r["group"], r["id"]) in drawn or r["group"] in groups]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xquad", type=int, default=400, help="seeded questions of XQuAD-ar")
    parser.add_argument("--tydi", type=int, default=None, help="seeded questions of the TyDi-ar held-out split "
                                                               "(default all 187)")
    parser.add_argument("--judge", type=int, default=0, help="also train and measure a judge of the selector's best "
                                                             "N candidates (the model scores each)")
    parser.add_argument("--timed", type=int, default=40, help="with --judge: gold test questions answered with and "
                                                              "without the judge, in turns, for the answer time")
    parser.add_argument("--quick", action="store_true", help="10 questions per set, to check that it runs")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR / "reader")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config(seeds_dir=HERE.parent / "seeds")
    generator = make_generator(config)
    cache = proposals_file(args.cache, config, generator.id)
    selector = load_selector(config.selector)
    cached = cache.read_text(encoding="utf-8").splitlines() if cache.exists() else []
    training = trained_on([json.loads(line) for line in cached], selector.manifest["settings"])
    if Counter(r["group"] for r in training) != selector.manifest["examples"]:
        parser.error(f"the proposals cache {cache} does not hold the selector's training examples "
                     f"{selector.manifest['examples']}: run evals/train_reader.py with its settings first")
    limit = 10 if args.quick else None
    retrieving = Assistant.load(config, generator)
    sets = {}
    for split in ("test", "dev"):
        examples = gold_examples(load_gold(HERE / f"gold-{split}.jsonl"), f"gold-{split}")[:limit]
        sets[f"gold {split} (retrieval{', trained on' if split == 'dev' else ''})"] = list(
            collect(lambda q, passages: retrieving.ask(q), examples, cache))
    for name, file, ids, sample in (
        ("TyDi-ar held-out (gold paragraph)", "tydiqa_goldp_arabic_dev.json", HERE / "splits" / "tydi-ar-heldout.ids",
         limit or args.tydi),
        ("XQuAD-ar (gold paragraph)", "xquad.ar.json", None, limit or args.xquad),
    ):
        examples, idf = squad_set(file, ids, sample, 0, name.split()[0].lower())
        sets[f"{name}, {len(examples)} questions"] = list(collect(Assistant(config, None, idf, generator).ask,
                                                                  examples, cache))
    choosers = {"old rules (fixed order)": rules, **{f"{s} alone": alone(s) for s in
                                                      ("reply", "copy", "typed", "definition", "clause")},
                "selector (default)": with_selector(selector)}
    if args.judge:
        judge = Judgements(generator, judgements_file(cache))
        judged = fit(training, judge=judge, judged=args.judge)
        choosers[f"selector and judge of its best {args.judge}"] = with_selector(judged, judge=judge)
    objective = selector.manifest.get("objective", "pointwise")
    other = fit(training, objective="listwise" if objective == "pointwise" else "pointwise")
    choosers[f"selector trained {other.manifest['objective']}"] = with_selector(other)
    if objective == "pointwise":
        choosers["listwise choice, pointwise refusal"] = ranked_by(other, selector)
    for group in GROUPS:
        choosers[f"selector without {group} features"] = with_selector(fit(training, drop=[group],
                                                                           objective=objective))
    choosers["oracle (best candidate)"] = oracle
    results, timings = {}, {}
    for name, records in sets.items():
        results[name] = {label: score(records, pick) for label, pick in choosers.items()}
        seconds = [r["seconds"] for r in records if r.get("seconds") is not None]
        timings[name] = {f"p{q}": percentile(seconds, q) for q in (50, 95)}
    lines = ["# Reader ablation", "", f"Model {generator.id}; selector trained on {selector.manifest.get('examples')}"
             f" (validation out of fold: {selector.manifest.get('validation')}); threshold {selector.threshold}.",
             f"Run: {time.strftime('%Y-%m-%d %H:%M')}, {round(time.perf_counter() - started)} s.", ""]
    lines += tables(results)
    lines += ["Answer time per question (the whole reader, the model read once; the answer is shown whole, so its "
              "first word comes at this time too):", ""]
    lines += [f"- {name}: p50 {t['p50']:.2f} s, p95 {t['p95']:.2f} s" for name, t in timings.items() if t["p50"]]
    judge_timings = {}
    if args.judge:
        path = args.cache / f"selector-judged-{args.judge}.json"
        path.write_text(json.dumps(judged.to_dict(), ensure_ascii=False), encoding="utf-8")
        questions = [q["question"] for q in load_gold(HERE / "gold-test.jsonl")][: limit or args.timed]
        judge_timings = answer_times({"with the judge": Assistant.load(replace(config, selector=str(path)), generator),
                                      "without the judge": retrieving}, questions)
        lines += ["", "Answer time of the whole assistant (retrieval, reading, checking) on gold test questions asked "
                  "in turns with and without the judge, the same process, warm:", ""]
        lines += [f"- {name}: p50 {t['p50']:.2f} s, p95 {t['p95']:.2f} s" for name, t in judge_timings.items()]
    headline = {name: {c: rows["selector (default)"][c] for c in ("correct", "f1", "false_refusals")}
                for name, rows in results.items()}
    figures = {"results": results, "timings": timings, "judge_timings": judge_timings}
    write_report(args.out, "ablation", "\n".join(lines) + "\n", figures, headline, commit(HERE.parent), machine())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
