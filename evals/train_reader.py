"""Train the reader's selector: one command, deterministic, from the committed splits and the shared data.

    .venv/bin/python evals/train_reader.py              # 10-25 minutes on 2 cores the first time; the model's
                                                        # proposals are cached, so a rerun takes a minute

The model reads every training question with its own paragraph (ARCD train, the TyDi-ar training split), a share
of them with another paragraph that does not hold the answer (negatives for refusal), and the gold dev split through
retrieval. The selector (a logistic regression over the candidates' features, pointwise or listwise) and its
refusal threshold, chosen out of fold for a stated false-refusal rate, are written to rag/data/selector.json with a
manifest: data hashes, the feature list, the model id and the validation scores.
XQuAD-ar and the gold test split are never read here.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rag.assistant import Assistant
from rag.config import CACHE_DIR, load_config
from rag.evaluate import load_gold
from rag.generators import make_generator
from rag.reading.train import (
    Example,
    Judgements,
    ParagraphIdf,
    collect,
    file_hash,
    fit,
    gold_examples,
    judgements_file,
    negatives,
    proposals_file,
    squad_examples,
)

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"  # the project's shared/ beside the checkout
SETS = {  # name: (data file, ids file)
    "arcd": (SHARED / "data" / "arcd-train.json", HERE / "splits" / "arcd-train.ids"),
    "tydi": (SHARED / "benchmarks" / "tydiqa_goldp_arabic_dev.json", HERE / "splits" / "tydi-ar-train.ids"),
}
GOLD_DEV = HERE / "gold-dev.jsonl"


def examples(per_set: int, negative_share: float, seed: int) -> list[Example]:
    """A seeded sample of each training set, and negatives made from them."""
    out = []
    for name, (data, ids) in SETS.items():
        wanted = set(ids.read_text(encoding="utf-8").split())
        found = squad_examples(json.loads(data.read_text(encoding="utf-8")), wanted, name)
        out += random.Random(seed).sample(found, min(per_set, len(found)))
    return out + negatives(out, negative_share, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-set", type=int, default=120, help="training questions drawn from each set")
    parser.add_argument("--negatives", type=float, default=0.15, help="share of them also read with a paragraph "
                                                                       "that does not answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--false-refusals", type=float, default=0.05, help="the threshold refuses at most this "
                                                                             "share of answerable questions")
    parser.add_argument("--objective", choices=["pointwise", "listwise"], default="pointwise",
                        help="judge each candidate alone, or against its question's other candidates")
    parser.add_argument("--c", type=float, default=1.0, help="inverse strength of the L2 penalty")
    parser.add_argument("--judged", type=int, default=0, help="train a judge too: the model's log-probability of "
                                                              "the selector's best N candidates of each question (0: "
                                                              "no judge, as shipped; see evals/README.md)")
    parser.add_argument("--out", type=Path, default=HERE.parent / "rag" / "data" / "selector.json")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR / "reader")
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config()
    generator = make_generator(config)
    cache = proposals_file(args.cache, config, generator.id)
    train = examples(args.per_set, args.negatives, args.seed)
    paragraphs = Assistant(config, None, ParagraphIdf(e.text for e in train), generator)
    records = list(collect(paragraphs.ask, train, cache))
    retrieving = Assistant.load(config, generator)
    records += list(collect(lambda q, passages: retrieving.ask(q), gold_examples(load_gold(GOLD_DEV), "gold-dev"),
                            cache))
    judge = Judgements(generator, judgements_file(cache)) if args.judged else None
    selector = fit(records, false_refusals=args.false_refusals, c=args.c, objective=args.objective, judge=judge,
                   judged=args.judged)
    selector.manifest |= {
        "model": generator.id,
        "data": {path.name: file_hash(path) for data, ids in SETS.values() for path in (data, ids)}
        | {GOLD_DEV.name: file_hash(GOLD_DEV)},
        "examples": {g: sum(r["group"] == g for r in records) for g in sorted({r["group"] for r in records})},
        "settings": {"per_set": args.per_set, "negatives": args.negatives, "seed": args.seed, "judged": args.judged,
                     "evidence_sentences": config.evidence_sentences, "candidates": config.candidates},
        "seconds": round(time.perf_counter() - started),
    }
    args.out.write_text(json.dumps(selector.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: threshold {selector.threshold}, validation {selector.manifest['validation']}")


if __name__ == "__main__":
    main()
