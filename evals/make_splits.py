"""The fixed training and held-out splits of the reader's training data, written once as files of question ids
(evals/splits/*.ids, one id a line) and never recomputed: see evals/README.md, "Training data".

    .venv/bin/python evals/make_splits.py [--shared ../shared]

TyDi QA GoldP Arabic is split by passage: a passage goes to the held-out 20 % when the sha256 of its text falls in
the lowest fifth, so every question of a passage is on the same side whatever order the file lists them in. ARCD
train is training data whole. XQuAD-ar is never split: it is only ever a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELD_OUT = 0.2


def passages(path: Path) -> list[tuple[str, list[str]]]:
    """(passage text, its question ids) of a SQuAD-format file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [(p["context"], [qa["id"] for qa in p["qas"]]) for a in data["data"] for p in a["paragraphs"]]


def held_out(context: str) -> bool:
    """Whether a passage is in the held-out fifth (by the sha256 of its text)."""
    return int(hashlib.sha256(context.encode("utf-8")).hexdigest()[:8], 16) < HELD_OUT * 16**8


def write(name: str, ids: list[str]) -> None:
    """evals/splits/<name>.ids, sorted."""
    (HERE / "splits").mkdir(exist_ok=True)
    (HERE / "splits" / f"{name}.ids").write_text("\n".join(sorted(ids)) + "\n", encoding="utf-8")
    print(f"{name}: {len(ids)} questions")


def main() -> None:
    """Write the three id files from the shared data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    args = parser.parse_args()
    tydi = passages(args.shared / "benchmarks" / "tydiqa_goldp_arabic_dev.json")
    write("tydi-ar-train", [i for context, ids in tydi if not held_out(context) for i in ids])
    write("tydi-ar-heldout", [i for context, ids in tydi if held_out(context) for i in ids])
    write("arcd-train", [i for _, ids in passages(args.shared / "data" / "arcd-train.json") for i in ids])


if __name__ == "__main__":
    main()
