"""Training the selector: questions with their paragraph (and paragraphs that do not answer them), the model's
proposals for each (cached: the slow part), labels from the reference answers, a logistic regression, and the
refusal threshold chosen out of fold for a stated false-refusal rate; then the judge, a second logistic regression
over the model's log-probabilities of the selector's best few candidates (cached too), trained on the selector's
out-of-fold choices. Needs the `train` extra (scikit-learn)."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rag.chunk import Chunk, sentence_spans
from rag.config import Config
from rag.errors import RagError
from rag.metrics import answer_tokens, answer_written, contains, exact_match, short, token_f1
from rag.normalize import terms
from rag.reading.candidates import Candidate, Proposal
from rag.reading.features import GROUPS, JUDGE_NAMES, NAMES, context, features, judge_features
from rag.reading.select import judge_with
from rag.reading.selector import Selector
from rag.stores.base import Passage, bm25_idf

RIGHT_F1 = 0.5  # a candidate with at least this token F1 against a reference answer is a right one
FOLDS = 5


@dataclass
class Example:
    """A question with the paragraph the reader gets, and its reference answers (none: it does not answer)."""

    id: str
    question: str
    answers: list[str]
    title: str
    text: str
    group: str  # where it comes from: arcd, tydi, ...; negatives too
    sources: list[str] = field(default_factory=list)  # the articles holding the answer (questions read by retrieval)


def squad_examples(data: dict, ids: set[str], group: str) -> list[Example]:
    """The questions of a SQuAD-format dataset whose ids are in ids, each with its paragraph."""
    out = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if str(qa["id"]) in ids:
                    answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                    out.append(Example(str(qa["id"]), qa["question"], answers, article.get("title", ""),
                                       paragraph["context"], group))
    return out


TRAINING_SETS = {  # name: (data file under the project's shared/, ids file under evals/splits/)
    "arcd": ("data/arcd-train.json", "arcd-train.ids"),
    "tydi": ("benchmarks/tydiqa_goldp_arabic_dev.json", "tydi-ar-train.ids"),
}


def training_files(shared: Path, splits: Path) -> dict[str, tuple[Path, Path]]:
    """Each training set's data file and ids file."""
    return {name: (shared / data, splits / ids) for name, (data, ids) in TRAINING_SETS.items()}


def draw(files: dict[str, tuple[Path, Path]], per_set: int, negative_share: float, seed: int,
         removed_share: float = 0.0) -> list[Example]:
    """A seeded sample of each training set, and negatives made from them (evals/train_reader.py's examples)."""
    out = []
    for name, (data, ids) in files.items():
        wanted = set(ids.read_text(encoding="utf-8").split())
        found = squad_examples(json.loads(data.read_text(encoding="utf-8")), wanted, name)
        out += random.Random(seed).sample(found, min(per_set, len(found)))
    return out + negatives(out, negative_share, seed) + removed(out, removed_share, seed)


def gold_examples(rows: list[dict], group: str) -> list[Example]:
    """Gold questions (rag.evaluate.load_gold rows): read through retrieval, so with no paragraph of their own."""
    return [Example(str(q["id"]), q["question"], q["answers"], "", "", group, q["sources"]) for q in rows]


def proposals_file(folder: Path, config: Config, generator_id: str) -> Path:
    """The cache of proposals for a model, the reader's code and prompts, and the settings they depend on (the
    embedder too: it retrieves the gold dev questions' passages): any change to them starts a new file."""
    digest = hashlib.sha256(f"{generator_id} {config.evidence_sentences} {config.evidence_share} {config.candidates} "
                            f"{config.top_k} {config.chunk_size} {config.n_ctx} {config.max_tokens} "
                            f"{config.embedder}".encode())
    package = resources.files("rag")
    for name in ("reading/candidates.py", "evidence.py", "spans.py", "answer_types.py", "dates.py", "assistant.py"):
        digest.update(package.joinpath(name).read_bytes())
    for prompt in sorted(resources.files("rag.prompts").iterdir(), key=lambda t: t.name):
        if prompt.name.startswith("reader"):
            digest.update(prompt.read_bytes())
    return folder / f"proposals-{generator_id}-{digest.hexdigest()[:12]}.jsonl"


def negatives(examples: list[Example], share: float, seed: int = 0) -> list[Example]:
    """For a seeded share of the questions, the other paragraph sharing the most of their terms that holds none of
    their answers: tempting evidence that does not answer."""
    paragraphs = list(dict.fromkeys(e.text for e in examples))
    bags = [set(terms(p)) for p in paragraphs]
    chosen = random.Random(seed).sample(examples, round(share * len(examples)))
    out = []
    for e in chosen:
        asked = set(terms(e.question))
        ranked = sorted(range(len(paragraphs)), key=lambda i: -len(asked & bags[i]))
        for i in ranked:
            if paragraphs[i] != e.text and not contains(paragraphs[i], e.answers):
                out.append(Example(f"{e.id}-neg", e.question, [], "", paragraphs[i], f"{e.group}-neg"))
                break
    return out


def removed(examples: list[Example], share: float, seed: int = 0) -> list[Example]:
    """For a seeded share of the questions, their own paragraph without the sentences that hold (half or more of)
    an answer: evidence about the question's very subject, in its words, that no longer answers it."""
    out = []
    for e in random.Random(seed).sample(examples, round(share * len(examples))):
        kept = [e.text[s:t] for s, t in sentence_spans(e.text) if not _holds(e.text[s:t], e.answers)]
        rest = " ".join(kept)
        if len(kept) >= 2 and not contains(rest, e.answers):
            out.append(Example(f"{e.id}-cut", e.question, [], e.title, rest, f"{e.group}-cut"))
    return out


def _holds(sentence: str, answers: list[str]) -> bool:
    words = set(answer_tokens(sentence))
    return any(sum(t in words for t in answer_tokens(a)) * 2 >= len(answer_tokens(a)) for a in answers)


def elsewhere(examples: list[Example], search: Callable[[str], list[Passage]],
              k: int) -> list[tuple[Example, list[Passage]]]:
    """For each answerable question read by retrieval, the k best passages of the articles that do not hold its
    answer (search: more than k, best first): evidence about the question's subject that does not answer it, as
    the gold set's unanswerable questions meet. None where those passages still hold an answer."""
    out = []
    for e in examples:
        if not e.answers:
            continue
        passages = [p for p in search(e.question) if p.chunk.article_id not in e.sources][:k]
        if passages and not contains(" ".join(p.chunk.text for p in passages), e.answers):
            out.append((Example(f"{e.id}-neg", e.question, [], "", "", f"{e.group}-neg"), passages))
    return out


class ParagraphIdf:
    """BM25's idf over a set of paragraphs: what the assistant's store gives evidence ranking, without an index."""

    def __init__(self, texts: Iterable[str]):
        self.df: dict[str, int] = {}
        self.n = 0
        for text in texts:
            self.n += 1
            for t in set(terms(text)):
                self.df[t] = self.df.get(t, 0) + 1

    def idf(self, wanted: Iterable[str]) -> dict[str, float]:
        """The idf of each term."""
        return {t: bm25_idf(self.n, self.df.get(t, 0)) for t in wanted}


def passage_of(example: Example) -> Passage:
    """The example's paragraph as the one passage the reader gets (as in reader-only evaluation)."""
    return Passage(Chunk(f"{example.id}#p", example.id, example.title, None, 0, len(example.text), example.text),
                   1.0, 1.0, 0.0)


def collect(ask: Callable, examples: list[Example], cache: Path) -> Iterator[dict]:
    """Each example's record (its proposal, None when refused before reading), asking only those not in the cache
    file (one JSON line per example, appended as they come)."""
    done = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            done[row["id"]] = row
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "a", encoding="utf-8") as f:
        for e in examples:
            if e.id not in done:
                answer = ask(e.question, passages=[passage_of(e)])
                proposal = answer.reading.proposal if answer.reading and answer.reading.proposal else None
                done[e.id] = {"id": e.id, "group": e.group, "answers": e.answers, "sources": e.sources,
                              "proposal": proposal.to_dict() if proposal else None,
                              "seconds": answer.timings.get("total")}
                f.write(json.dumps(done[e.id], ensure_ascii=False) + "\n")
                f.flush()
            yield done[e.id]


def right(candidate: Candidate, answers: list[str]) -> bool:
    """True when a candidate matches a reference answer well enough (token F1 >= RIGHT_F1)."""
    return bool(answers) and token_f1(candidate.text, answers) >= RIGHT_F1


_DESCRIBED: dict[int, tuple[dict, Proposal, list[dict[str, float]]]] = {}


def described(record: dict) -> tuple[Proposal, list[dict[str, float]]]:
    """A record's proposal and its candidates' features, worked out once per process (training and the ablation
    score the same records many times)."""
    # Keyed by the proposal read from the cache, kept alive here so that its id is never reused: the same question
    # read under other settings (train_reader.py --compare) is another proposal.
    key = id(record["proposal"])
    if key not in _DESCRIBED:
        proposal = Proposal.from_dict(record["proposal"])
        shared = context(proposal)
        _DESCRIBED[key] = record["proposal"], proposal, [features(proposal, c, shared) for c in proposal.candidates]
    return _DESCRIBED[key][1:]


def matrix(records: list[dict], names: list[str]) -> tuple[list[list[float]], list[int], list[int]]:
    """Features (of the named columns), labels and record index of every candidate of the records."""
    rows, labels, owners = [], [], []
    for i, record in enumerate(records):
        if record["proposal"] is None:
            continue
        proposal, values_of = described(record)
        for candidate, values in zip(proposal.candidates, values_of, strict=True):
            rows.append([values[n] for n in names])
            labels.append(int(right(candidate, record["answers"])))
            owners.append(i)
    return rows, labels, owners


def threshold_for(best: list[float | None], answerable: list[bool], false_refusals: float) -> float:
    """The highest threshold that refuses at most this share of the answerable questions (best: the top
    probability of each question, None where nothing was proposed, which is refused whatever the threshold)."""
    scores = sorted(b for b, a in zip(best, answerable, strict=True) if a and b is not None)
    allowed = int(false_refusals * sum(answerable)) - sum(1 for b, a in zip(best, answerable, strict=True)
                                                           if a and b is None)
    if allowed <= 0 or not scores:
        return 0.0
    return scores[allowed] if allowed < len(scores) else 1.0  # refuses the `allowed` least likely


def listwise(z, y, groups, c: float) -> tuple[list[float], float]:
    """Coefficients that rank each question's right candidates first (softmax over a question's candidates, L2 with
    strength 1/c), and the intercept that makes the best candidate's score a probability of being right."""
    import numpy as np
    from scipy.optimize import minimize
    from sklearn.linear_model import LogisticRegression

    questions = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    ranked = [rows for rows in questions if y[rows].any()]  # a question with no right candidate ranks nothing

    def loss(w):
        total, grad = w @ w / (2 * c), w / c
        for rows in ranked:
            s = z[rows] @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            right = y[rows] == 1
            q = p * right / p[right].sum()  # the softmax restricted to the right candidates
            total -= np.log(p[right].sum())
            grad -= z[rows].T @ (q - p)
        return total, grad

    w = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B").x
    best = [rows[np.argmax(z[rows] @ w)] for rows in questions]
    calibration = LogisticRegression().fit((z[best] @ w).reshape(-1, 1), y[best])
    slope = float(calibration.coef_[0, 0])
    return (w * slope).tolist(), float(calibration.intercept_[0])


RecordJudge = Callable[[dict, Proposal, list[int]], list[list[float]]]  # Judge, for a record's proposal


def fit(records: list[dict], drop: Iterable[str] = (), false_refusals: float = 0.05, c: float = 1.0,
        objective: str = "pointwise", judge: RecordJudge | None = None, judged: int = 4) -> Selector:
    """A selector trained on the records, without the feature groups in drop: each candidate judged alone
    (pointwise) or against its question's others (listwise); its threshold refuses, out of fold, at most this share
    of the answerable questions. With judge (the model's log-probabilities of a record's candidates), a judge over
    the `judged` best candidates of each question by the selector out of fold, trained and thresholded the same way
    (pointwise)."""
    dropped = {n for g in drop for n in GROUPS[g]}
    names = [n for n in NAMES if n not in dropped]
    rows, labels, owners = matrix(records, names)
    selector, held = train_linear(records, names, rows, labels, owners, false_refusals, c, objective)
    selector.manifest |= {"candidates": len(labels), "right": sum(labels), "objective": objective}
    if judge is None:
        return selector
    rows, labels, owners, looked = [], [], [], []
    for i, record in enumerate(records):
        probabilities = held.get(record["id"])
        proposal = described(record)[0] if probabilities else None
        if not proposal or proposal.candidates[0].decision:
            continue
        top = sorted(range(len(probabilities)), key=lambda j: (-probabilities[j], j))[:judged]
        values = judge_features([probabilities[j] for j in top], judge(record, proposal, top))
        for j, v in zip(top, values, strict=True):
            rows.append([v[n] for n in JUDGE_NAMES])
            labels.append(int(right(proposal.candidates[j], record["answers"])))
            owners.append(i)
            looked.append(j)
    selector.judge, _ = train_linear(records, JUDGE_NAMES, rows, labels, owners, false_refusals, c, "pointwise",
                                     looked)
    selector.judged = judged
    selector.manifest["selector_validation"] = selector.manifest["validation"]
    selector.manifest["validation"] = selector.judge.manifest["validation"]
    return selector


def train_linear(records: list[dict], names: list[str], rows: list[list[float]], labels: list[int],
                 owners: list[int], false_refusals: float, c: float, objective: str,
                 looked: list[int] | None = None) -> tuple[Selector, dict[str, list[float]]]:
    """A logistic regression over rows of the records' candidates (owners: each row's record; looked: each row's
    candidate, where rows are not all of them), its threshold chosen out of fold, and its out-of-fold probability
    of every candidate of each record (0 for those without a row)."""
    try:
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold
    except ImportError as e:
        raise RagError("training the selector needs scikit-learn: pip install -e '.[train]'") from e
    x, y, groups = np.asarray(rows, dtype=float), np.asarray(labels), np.asarray(owners)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale

    def train(rows) -> tuple[list[float], float]:
        if objective == "listwise":
            return listwise(z[rows], y[rows], groups[rows], c)
        model = LogisticRegression(C=c, max_iter=2000).fit(z[rows], y[rows])
        return model.coef_[0].tolist(), float(model.intercept_[0])

    probability = np.zeros(len(y))
    for inside, outside in GroupKFold(FOLDS).split(z, y, groups):
        coef, intercept = train(inside)
        probability[outside] = 1 / (1 + np.exp(-(z[outside] @ np.asarray(coef) + intercept)))
    if looked is None:  # a row for every candidate of each record, in order
        counts: Counter[int] = Counter()
        looked = []
        for i in owners:
            looked.append(counts[i])
            counts[i] += 1
    held = {r["id"]: [0.0] * len(r["proposal"]["candidates"]) for r in records if r["proposal"]}
    for p, i, j in zip(probability, owners, looked, strict=True):
        held[records[i]["id"]][j] = float(p)
    rowed = set(owners)
    best = [max(held[r["id"]]) if i in rowed else None for i, r in enumerate(records)]
    threshold = threshold_for(best, [bool(r["answers"]) for r in records], false_refusals)
    coef, intercept = train(np.arange(len(y)))
    validation = score(records, out_of_fold(held, threshold))
    return Selector(names, mean.tolist(), scale.tolist(), coef, intercept, round(float(threshold), 4),
                    {"C": c, "false_refusal_target": false_refusals, "validation": validation}), held


def out_of_fold(held: dict[str, list[float]], threshold: float) -> Chooser:
    """The chooser of cross-validation: each question's candidates scored by the fold that did not train on it."""

    def pick(record: dict, proposal: Proposal) -> Candidate | None:
        probs = held.get(record["id"])
        if not probs:
            return None
        i = max(range(len(probs)), key=lambda j: probs[j])
        return proposal.candidates[i] if probs[i] >= threshold or proposal.candidates[i].decision else None

    return pick


Chooser = Callable[[dict, Proposal], Candidate | None]  # a record and its proposal -> the answer, or None


def with_selector(selector: Selector, threshold: float | None = None, judge: RecordJudge | None = None,
                  judged: int = -1) -> Chooser:
    """The selector's best candidate (its judge's, given the model's judgements), or None below the threshold
    (yes/no decisions always given)."""

    def pick(record: dict, proposal: Proposal) -> Candidate | None:
        looks = judge and (lambda top: judge(record, proposal, top))
        return selector.choose(proposal, threshold, described(record)[1], looks, judged)[1]

    return pick


def ranked_by(ranker: Selector, refuser: Selector) -> Chooser:
    """The ranker's best candidate, given only where the refuser would answer: a listwise selector choosing and a
    pointwise one deciding whether to answer (measured, not shipped: evals/README.md)."""

    def pick(record: dict, proposal: Proposal) -> Candidate | None:
        values = described(record)[1]
        return ranker.choose(proposal, 0.0, values)[1] if refuser.choose(proposal, None, values)[1] else None

    return pick


class Judgements:
    """The model's log-probabilities of candidates as its reply (rag.reading.select.judge_with), asked only for
    those not in a cache file (a JSON line per reply: the record, the reply's text, its log-probabilities)."""

    def __init__(self, generator, path: Path):
        self.generator, self.path, self.seen = generator, path, {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                self.seen[(row["record"], row["text"])] = row["logprobs"]

    def __call__(self, record: dict, proposal: Proposal, indices: list[int]) -> list[list[float]]:
        """The log-probabilities of the candidates at indices, then of saying there is no answer."""
        key = f"{record['group']}/{record['id']}"
        texts = [proposal.candidates[i].text for i in indices] + [NO_ANSWER]
        missing = [i for i in indices if (key, proposal.candidates[i].text) not in self.seen]
        if missing or (key, NO_ANSWER) not in self.seen:
            found = judge_with(self.generator, proposal)(missing)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                for text, logprobs in zip([*(proposal.candidates[i].text for i in missing), NO_ANSWER], found,
                                          strict=True):
                    if (key, text) in self.seen:  # no answer, asked again with each candidate missing
                        continue
                    self.seen[(key, text)] = logprobs
                    f.write(json.dumps({"record": key, "text": text, "logprobs": logprobs}, ensure_ascii=False)
                            + "\n")
        return [self.seen[(key, text)] for text in texts]


NO_ANSWER = ""  # the cache's key for the model's log-probability of saying there is no answer


def judgements_file(proposals: Path) -> Path:
    """The cache of judgements beside a proposals cache: a new file for new proposals or a new judged reply."""
    digest = hashlib.sha256(proposals.name.encode())
    digest.update(resources.files("rag.prompts").joinpath("judge.toml").read_bytes())
    return proposals.with_name(f"judgements-{digest.hexdigest()[:12]}.jsonl")


def oracle(record: dict, proposal: Proposal) -> Candidate | None:
    """The candidate with the best F1 against the references: the ceiling of choosing."""
    answers = record["answers"]
    scored = [(token_f1(c.text, answers), i) for i, c in enumerate(proposal.candidates)] if answers else []
    f1, i = max(scored, default=(0.0, -1))
    return proposal.candidates[i] if f1 > 0 else None


def alone(source: str) -> Chooser:
    """The first candidate one way of proposing gives (the best-ranked sentence's, for typed spans and clauses)."""

    def pick(record: dict, proposal: Proposal) -> Candidate | None:
        found = [c for c in proposal.candidates if source in c.sources]
        return max(found, key=lambda c: c.parts[0].evidence.score, default=None)

    return pick


def score(records: list[dict], pick: Chooser) -> dict:
    """Answer figures of a chooser over records: correct (holds a reference and is short), exact, F1, false
    refusals, unanswerable questions refused, citation precision (cited articles that hold the answer), and the
    answer (all of a list's items; yes/no questions left out) in the evidence (every sentence proposing candidates)
    and in the sentences the model read."""
    answerable = [r for r in records if r["answers"]]
    unanswerable = [r for r in records if not r["answers"]]
    texts, cited, given, read = {}, {}, {}, {}
    for r in records:
        proposal = described(r)[0] if r["proposal"] else None
        candidate = pick(r, proposal) if proposal else None
        texts[r["id"]] = candidate.text if candidate else ""
        cited[r["id"]] = [p.evidence.source for p in candidate.parts] if candidate else []
        given[r["id"]] = " ".join(ev.text for ev in proposal.evidence) if proposal else ""
        read[r["id"]] = " ".join(ev.text for ev in proposal.evidence if ev.shown) if proposal else ""

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]  # a yes/no question has no answer written in its evidence
        return round(sum(values) / len(values), 4) if values else None

    return {
        "n": len(records),
        "correct": mean([bool(texts[r["id"]]) and contains(texts[r["id"]], r["answers"])
                         and short(texts[r["id"]], r["answers"]) for r in answerable]),
        "exact": mean([exact_match(texts[r["id"]], r["answers"]) for r in answerable]),
        "f1": mean([token_f1(texts[r["id"]], r["answers"]) for r in answerable]),
        "false_refusals": mean([not texts[r["id"]] for r in answerable]),
        "unanswerable_refused": mean([not texts[r["id"]] for r in unanswerable]),
        "citation_precision": mean([sum(s in r["sources"] for s in cited[r["id"]]) / len(cited[r["id"]])
                                    for r in answerable if r.get("sources") and cited[r["id"]]]),
        "evidence_hit": mean([answer_written(given[r["id"]], r["answers"]) for r in answerable]),
        "read_hit": mean([answer_written(read[r["id"]], r["answers"]) for r in answerable]),
    }


def file_hash(path: Path) -> str:
    """The sha256 of a file, for the selector's manifest."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
