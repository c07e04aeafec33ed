"""Ablation of the reader, side by side in one run: today's pipeline, then each step of the extracting reader added,
on the gold dev and test splits and on XQuAD-ar and TyDi-ar given the gold paragraph; plus weighted fusion of the
dense and BM25 rankings on all of them. Writes evals/results/ablation-<time>.json and ablation-latest.md.

    .venv/bin/python evals/ablation.py            # about 70 minutes on 2 cores; --quick checks that it runs
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from rag import evidence as evidence_module
from rag.assistant import Assistant
from rag.config import PACKAGE_ROOT, Config, load_config
from rag.embedders import make_embedder
from rag.evaluate import (
    GOLD_KS,
    SQUAD_KS,
    QueryCache,
    _table,
    evaluate,
    load_gold,
    mean,
    recall_at,
    reciprocal_rank,
    run_info,
    squad_questions,
    summarize_answers,
)
from rag.generators import make_generator
from rag.index import build_index
from rag.normalize import fold_script, terms
from rag.stores import make_store
from rag.stores.base import rrf

RESULTS = PACKAGE_ROOT / "evals" / "results"
BENCHMARKS = PACKAGE_ROOT.parent / "shared" / "benchmarks"
SQUAD = {"xquad-ar": "xquad.ar.json", "tydi-ar": "tydiqa_goldp_arabic_dev.json"}
# (name, settings, module constants of rag.evidence): today's pipeline, then each step added.
STEPS = [
    ("today: free reader, 2 sentences", {"reader": "free", "evidence_sentences": 2},
     {"TYPE_BONUS": 0.0, "MAX_UNIT_WORDS": 30}),
    ("+ extracting reader", {"reader": "extract", "evidence_sentences": 2}, {"TYPE_BONUS": 0.0, "MAX_UNIT_WORDS": 30}),
    ("+ evidence ranked by answer type", {"reader": "extract", "evidence_sentences": 2}, {"MAX_UNIT_WORDS": 30}),
    ("+ 3 sentences of up to 40 words (default)", {}, {}),
]
FUSION_WEIGHTS = [(1.0, 1.0), (1.5, 1.0), (2.0, 1.0), (3.0, 1.0), (1.0, 0.0)]  # (dense, bm25); (1, 0): dense alone
COLUMNS = ["correct", "exact", "f1", "contains", "citation_precision", "citation_recall", "refusal_accuracy",
           "false_refusal_rate", "evidence_hit"]


@contextmanager
def constants(values: dict):
    """rag.evidence's module constants set for the duration of a step."""
    saved = {name: getattr(evidence_module, name) for name in values}
    for name, value in values.items():
        setattr(evidence_module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(evidence_module, name, value)


def fusion(assistant: Assistant, questions: list[dict], ks: tuple[int, ...]) -> dict:
    """Recall@k and MRR of the hybrid ranking for each (dense, bm25) weight of reciprocal rank fusion."""
    queries = QueryCache(assistant.embedder)
    queries.prefill([q["question"] for q in questions])
    rankings = []
    for q in questions:
        if not q["sources"]:
            continue
        vector = queries.embed_batch([fold_script(q["question"])], "query")[0]
        dense = assistant.store.search(vector, terms(q["question"]), 50, "dense")
        lexical = assistant.store.search(vector, terms(q["question"]), 50, "bm25")
        rankings.append((q["sources"], [p.chunk for p in dense], [p.chunk for p in lexical]))
    out = {}
    for weights in FUSION_WEIGHTS:
        scores = []
        for gold, dense, lexical in rankings:
            chunks = {c.id: c for c in [*dense, *lexical]}
            ids = list(chunks)
            fused = rrf([[ids.index(c.id) for c in dense], [ids.index(c.id) for c in lexical]], weights=list(weights))
            ranked = [chunks[ids[i]].article_id for i, _ in fused]
            scores.append({**{f"recall@{k}": recall_at(ranked, gold, k) for k in ks},
                           "mrr": reciprocal_rank(ranked, gold)})
        out[f"{weights[0]:g}:{weights[1]:g}"] = {key: mean(s[key] for s in scores) for key in scores[0]}
    return out


def squad_index(name: str, config: Config, embedder, work: Path, limit: int | None) -> tuple[Config, list[dict]]:
    """Every paragraph of a benchmark (of its first `limit` questions) indexed as an article in work/<name>; the
    config pointing at it, and the questions."""
    data = json.loads((BENCHMARKS / SQUAD[name]).read_text(encoding="utf-8"))
    seeds = work / name / "seeds"
    seeds.mkdir(parents=True)
    questions = squad_questions(data, seeds, name)[:limit]
    for unused in {p.name for p in seeds.iterdir()} - {q["sources"][0] for q in questions}:
        (seeds / unused).unlink()
    config = config.replace(seeds_dir=work / name / "seeds", index_dir=work / name / "index", store="faiss")
    build_index(config.seeds_dir, make_store(config), embedder, config.chunk_size, config.chunk_overlap,
                log=lambda *_: None)
    return config, questions


def run_step(config: Config, embedder, generator, questions: list[dict], ks, reader_only: bool) -> dict:
    """One step of the ablation on one set: answer figures and latencies."""
    assistant = Assistant(config, embedder, make_store(config), generator)
    assistant.warm_up()
    records = evaluate(assistant, questions, ks, range(len(questions)), reader_only=reader_only)
    return summarize_answers(records)


def main(argv: list[str] | None = None) -> None:
    """Run every step on every set; write and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 questions per set, to check that everything runs")
    parser.add_argument("--squad-sample", type=int, default=200, help="questions of each SQuAD benchmark")
    parser.add_argument("--steps", type=int, nargs="*", help="which steps (0-based; default all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default evals/results)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    base = load_config(seeds_dir=PACKAGE_ROOT / "seeds")
    embedder, generator = make_embedder(base), make_generator(base)
    limit = 8 if args.quick else None
    work = Path(tempfile.mkdtemp(prefix="rag-ablation-"))
    try:
        sets: dict[str, tuple[Config, list[dict], tuple, bool]] = {}
        gold_config = base.replace(index_dir=work / "gold-index", store="faiss")
        build_index(gold_config.seeds_dir, make_store(gold_config), embedder, gold_config.chunk_size,
                    gold_config.chunk_overlap, log=lambda *_: None)
        for split in ("dev", "test"):
            sets[f"gold-{split}"] = (gold_config, load_gold(PACKAGE_ROOT / "evals" / f"gold-{split}.jsonl")[:limit],
                                     GOLD_KS, False)
        for name in SQUAD:
            print(f"indexing {name}", file=sys.stderr)
            config, questions = squad_index(name, base, embedder, work, limit)
            sample = random.Random(0).sample(questions, min(limit or args.squad_sample, len(questions)))
            sets[name] = (config, sample, SQUAD_KS, True)
            sets[name + ":all"] = (config, questions, SQUAD_KS, False)
        result = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stem": time.strftime("ablation-%Y%m%d-%H%M%S"),
                  "argv": sys.argv[1:], "fusion": {}, "steps": [],
                  **run_info(Assistant(base, embedder, make_store(gold_config), generator), True)}
        for name, (config, questions, ks, _) in sets.items():
            if name.endswith(":all") or name.startswith("gold"):
                assistant = Assistant(config, embedder, make_store(config), generator)
                result["fusion"][name.removesuffix(":all")] = fusion(assistant, questions, ks)
        for i, (label, settings, values) in enumerate(STEPS):
            if args.steps and i not in args.steps:
                continue
            row = {"step": label, "settings": settings, "constants": values, "sets": {}}
            with constants(values):
                for name, (config, questions, ks, reader_only) in sets.items():
                    if name.endswith(":all"):
                        continue
                    print(f"{label} / {name}", file=sys.stderr)
                    row["sets"][name] = run_step(config.replace(**settings), embedder, generator, questions, ks,
                                                 reader_only)
            result["steps"].append(row)
            result["seconds"] = round(time.perf_counter() - started, 1)
            write(result, args.out)  # after every step, so that a long run cut short still leaves its figures
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(result))
    print(f"results: {args.out / result['stem']}.json (and ablation-latest.md)")


def render(result: dict) -> str:
    """The Markdown report: one table per set, a row per step; then fusion weights."""
    lines = [f"# Reader ablation ({result['created']}, commit `{result['commit'][:12]}`)", "",
             f"Generator `{result['generator']}`, embedder `{result['embedder']}`, {result['seconds']} s. "
             "Gold: our questions (tune on dev, report test). XQuAD-ar and TyDi-ar: the reader is given the "
             "question's own paragraph (as published reader figures are); F1 and exact match of the copied span.", ""]
    names = list(result["steps"][0]["sets"]) if result["steps"] else []
    for name in names:
        lines += [f"## {name}", ""]
        rows = []
        for step in result["steps"]:
            a = step["sets"][name]
            lat = a["latency"]
            rows.append([step["step"], *(a.get(c) for c in COLUMNS), f"{lat['first_token_p50']} / "
                         f"{lat['first_token_p95']}", f"{lat['total_p50']} / {lat['total_p95']}"])
        lines += _table(["step", *COLUMNS, "first token p50/p95 (s)", "total p50/p95 (s)"], rows) + [""]
    lines += ["## Fusion weights (dense : BM25) of reciprocal rank fusion", ""]
    for name, table in result["fusion"].items():
        keys = list(next(iter(table.values())))
        lines += [f"### {name}", ""] + _table(["weights", *keys], [[w, *(v[k] for k in keys)]
                                                                    for w, v in table.items()]) + [""]
    return "\n".join(lines)


def write(result: dict, out: Path) -> None:
    """ablation-<time>.json and ablation-latest.md/.json in out."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, ensure_ascii=False, indent=2) + "\n"
    for name in (result["stem"], "ablation-latest"):
        (out / f"{name}.json").write_text(text, encoding="utf-8")
    (out / "ablation-latest.md").write_text(render(result), encoding="utf-8")


if __name__ == "__main__":
    main()
