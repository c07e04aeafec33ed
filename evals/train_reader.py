"""Train the reader's selector: one command, deterministic, from the committed splits and the shared data.

    .venv/bin/python evals/train_reader.py              # 10-25 minutes on 2 cores the first time; the model's
                                                        # proposals are cached, so a rerun takes a minute
    .venv/bin/python evals/train_reader.py --compare "evidence_sentences=3 evidence_share=0.6" \
        "evidence_sentences=4 evidence_share=0.4"       # ways of reading compared: 4 minutes a variant

The model reads every training question with its own paragraph (ARCD train, the TyDi-ar training split), a share
of them with another paragraph that does not hold the answer (negatives for refusal; with --removed, a share with
their own paragraph less the sentences holding the answer), and the gold dev split through
retrieval (with --elsewhere, each answerable one again with the passages retrieval finds in the other articles:
negatives as the gold set's unanswerable questions are, about their subject and not answering it). The selector
(a logistic regression over the candidates' features, pointwise or listwise) and its refusal threshold, chosen out
of fold for a stated false-refusal rate, are written to rag/data/selector.json with a manifest: data hashes, the
feature list, the model id and the validation scores. With --compare it trains nothing: the first questions of
each training sample are read under each variant of the settings, and the variants are compared
(results/reader-variants.md).
XQuAD-ar and the gold test split are never read here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rag.assistant import Assistant
from rag.config import CACHE_DIR, load_config
from rag.errors import RagError
from rag.evaluate import load_gold
from rag.generators import make_generator
from rag.metrics import percentile, token_f1
from rag.reading.selector import load_selector
from rag.reading.train import (
    Chooser,
    Judgements,
    ParagraphIdf,
    alone,
    collect,
    described,
    draw,
    elsewhere,
    file_hash,
    fit,
    gold_examples,
    judgements_file,
    oracle,
    proposals_file,
    score,
    training_files,
    with_selector,
)
from rag.report import commit, machine, table, write_report

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"  # the project's shared/ beside the checkout
SETS = training_files(SHARED, HERE / "splits")
GOLD_DEV = HERE / "gold-dev.jsonl"


def per_question(records: list[dict], pick: Chooser) -> dict[str, float]:
    """Token F1 of a chooser's answer to each question."""
    picked = {r["id"]: pick(r, described(r)[0]) if r["proposal"] else None for r in records}
    return {r["id"]: token_f1(picked[r["id"]].text, r["answers"]) if picked[r["id"]] else 0.0 for r in records}


def compare(variants: list[str], questions: int, args: argparse.Namespace) -> None:
    """Read the first questions of each training sample under each variant of the settings; report token F1 of the
    reply alone, the copy alone, the packaged selector (never refusing) and the oracle, each against the first
    variant question by question, the answer in what the model read, and the answer time."""
    train = draw(SETS, args.per_set, 0.0, args.seed)  # the questions training draws, so the same idf
    chosen = [e for name in SETS for e in [e for e in train if e.group == name][:questions]]
    choosers = {"reply": alone("reply"), "copy": alone("copy"), "selector": with_selector(load_selector(""), 0.0),
                "oracle": oracle}
    rows, first, figures = [], {}, {}
    for given in variants:
        config = load_config(**dict(pair.split("=", 1) for pair in given.split()))
        variant = given or "(defaults)"
        generator = make_generator(config)
        reader = Assistant(config, None, ParagraphIdf(e.text for e in train), generator)
        records = list(collect(reader.ask, chosen, proposals_file(args.cache, config, generator.id)))
        cells, figures[variant] = [], {}
        for name, pick in choosers.items():
            f1 = per_question(records, pick)
            first.setdefault(name, f1)
            better = sum(f1[q] > first[name][q] for q in f1)
            worse = sum(f1[q] < first[name][q] for q in f1)
            figures[variant][name] = {"f1": round(sum(f1.values()) / len(f1), 4), "better": better, "worse": worse}
            cells.append(f"{figures[variant][name]['f1']:.3f} (+{better} −{worse})")
        seconds = [r["seconds"] for r in records if r["seconds"] is not None]
        figures[variant] |= {"read_hit": score(records, oracle)["read_hit"], "p50": percentile(seconds, 50)}
        rows.append([variant, *cells, figures[variant]["read_hit"], f"{figures[variant]['p50']:.2f}"])
    lines = ["# Ways of reading compared", "",
             f"The first {questions} questions of each training sample ({', '.join(SETS)}), each with its paragraph, "
             "read under each variant of the settings; token F1 of each way of answering, with the questions it "
             "answers better (+) and worse (−) than under the first variant; the answer in the sentences the model "
             f"read; the answer time p50 (s). Run {time.strftime('%Y-%m-%d %H:%M')}.", "",
             *table(["settings", *choosers, "answer read", "p50 s"], rows)]
    headline = {variant: figures[variant]["selector"]["f1"] for variant in figures}
    write_report(HERE / "results", "reader-variants", "\n".join(lines) + "\n", figures, headline,
                 commit(HERE.parent), machine())
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-set", type=int, default=120, help="training questions drawn from each set")
    parser.add_argument("--negatives", type=float, default=0.15, help="share of them also read with a paragraph "
                                                                       "that does not answer")
    parser.add_argument("--removed", type=float, default=0.0, help="share of them also read with their own "
                        "paragraph less the sentences holding the answer (negatives; measured, not shipped: see "
                        "evals/README.md)")
    parser.add_argument("--elsewhere", action="store_true", help="also read each answerable gold dev question "
                        "with the passages retrieval finds in the other articles (negatives; measured, not shipped: "
                        "see evals/README.md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--false-refusals", type=float, default=0.05, help="the threshold refuses at most this "
                                                                             "share of answerable questions")
    parser.add_argument("--objective", choices=["pointwise", "listwise"], default="pointwise",
                        help="judge each candidate alone, or against its question's other candidates")
    parser.add_argument("--c", type=float, default=1.0, help="inverse strength of the L2 penalty")
    parser.add_argument("--judged", type=int, default=0, help="train a judge too: the model's log-probability of "
                                                              "the selector's best N candidates of each question (0: "
                                                              "no judge, as shipped; see evals/README.md)")
    parser.add_argument("--compare", nargs="+", metavar="SETTINGS", help='train nothing: compare ways of reading, '
                        'each a variant of the settings ("evidence_sentences=4 evidence_share=0.4"; "" for the '
                        'defaults), on the first --questions of each training sample')
    parser.add_argument("--questions", type=int, default=60, help="with --compare: questions of each sample")
    parser.add_argument("--out", type=Path, default=HERE.parent / "rag" / "data" / "selector.json")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR / "reader")
    args = parser.parse_args()
    for name in ("negatives", "removed"):
        if not 0 <= (share := getattr(args, name)) <= 1:
            parser.error(f"--{name} is a share of the questions, from 0 to 1, not {share}")
    if args.compare:
        if wrong := [pair for variant in args.compare for pair in variant.split() if "=" not in pair]:
            parser.error(f"--compare takes settings as name=value, not {wrong[0]!r}")
        for variant in args.compare:  # every variant checked before the first is read (minutes each)
            try:
                load_config(**dict(pair.split("=", 1) for pair in variant.split()))
            except RagError as e:
                parser.error(str(e))
        return compare(args.compare, args.questions, args)
    started = time.perf_counter()
    config = load_config()
    generator = make_generator(config)
    cache = proposals_file(args.cache, config, generator.id)
    train = draw(SETS, args.per_set, args.negatives, args.seed, args.removed)
    paragraphs = Assistant(config, None, ParagraphIdf(e.text for e in train), generator)
    records = list(collect(paragraphs.ask, train, cache))
    retrieving = Assistant.load(config, generator)
    gold = gold_examples(load_gold(GOLD_DEV), "gold-dev")
    records += list(collect(lambda q, passages: retrieving.ask(q), gold, cache))
    if args.elsewhere:
        tempting = elsewhere(gold, lambda q: retrieving.search(q, 4 * config.top_k), config.top_k)
        given = {e.question: passages for e, passages in tempting}
        records += list(collect(lambda q, passages: retrieving.ask(q, passages=given[q]), [e for e, _ in tempting],
                                cache))
    judge = Judgements(generator, judgements_file(cache)) if args.judged else None
    selector = fit(records, false_refusals=args.false_refusals, c=args.c, objective=args.objective, judge=judge,
                   judged=args.judged)
    selector.manifest |= {
        "model": generator.id,
        "embedder": config.embedder,  # it retrieved the gold dev questions' passages
        "data": {path.name: file_hash(path) for data, ids in SETS.values() for path in (data, ids)}
        | {GOLD_DEV.name: file_hash(GOLD_DEV)},
        "examples": {g: sum(r["group"] == g for r in records) for g in sorted({r["group"] for r in records})},
        "settings": {"per_set": args.per_set, "negatives": args.negatives, "removed": args.removed,
                     "elsewhere": args.elsewhere, "seed": args.seed, "judged": args.judged,
                     "evidence_sentences": config.evidence_sentences, "evidence_share": config.evidence_share,
                     "candidates": config.candidates},
        "seconds": round(time.perf_counter() - started),
    }
    args.out.write_text(json.dumps(selector.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: threshold {selector.threshold}, validation {selector.manifest['validation']}")


if __name__ == "__main__":
    main()
