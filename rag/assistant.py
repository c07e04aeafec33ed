"""The one place the pipeline is wired: question -> passages -> evidence -> generation -> checked citations."""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from rag.chunk import sentence_spans
from rag.cite import Citation, Evidence, attribute, heading
from rag.config import Config, load_config
from rag.embedders import Embedder, make_embedder
from rag.errors import RagError
from rag.generators import Generator, make_generator
from rag.ingest import Article
from rag.normalize import is_arabic, normalize, terms
from rag.prompts import load_prompt
from rag.retrieve import Mode, Passage, search
from rag.stores import Store, make_store
from rag.stores.base import check_compatible

MIN_COVERAGE = 0.5  # idf-weighted share of the question's terms found in the passages (or see min_similarity)
RELATIVE_EVIDENCE = 0.6  # keep evidence scoring at least this share of the best sentence's score
_CLAUSE = re.compile(r"\s*[،,؛]\s+")
STOP = ["\n\n", "المقاطع:", "السؤال:", "<|im_end|>", "<|endoftext|>"]
_REFUSALS = ("لا تتضمن المصادر", "لا تتضمن المقاطع", "لا توجد اجابه", "do not contain", "not in the sources")
_REFERRING = frozenset(
    normalize(w) for w in "ذلك هذا هذه تلك هو هي هم حينها عندها وقتها it that this they he she".split()
)


@dataclass
class Answer:
    """What the assistant says: a short answer whose sentences carry [n] markers, or a refusal."""

    question: str
    text: str
    citations: list[Citation]
    refused: bool
    passages: list[Passage]
    timings: dict[str, float] = field(default_factory=dict)
    raw: str = ""  # the model's reply before checking

    def to_dict(self) -> dict:
        """The JSON shape of `rag ask --json`."""
        return {
            "question": self.question,
            "answer": self.text,
            "refused": self.refused,
            "citations": [c.to_dict() for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def check_question(question: object, max_chars: int) -> str:
    """The question cleaned of control characters, or a RagError that says what is wrong with it."""
    if isinstance(question, bytes):
        question = question.decode("utf-8", errors="replace")
    if not isinstance(question, str):
        raise RagError("the question must be text")
    cleaned = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in question.replace("\ufffd", " "))
    cleaned = " ".join(cleaned.split())
    if not cleaned:
        raise RagError("the question is empty: type a question about the articles")
    if len(cleaned) > max_chars:
        raise RagError(f"the question is {len(cleaned)} characters long; the limit is {max_chars}")
    if not any(c.isalnum() for c in cleaned):
        raise RagError("the question has no words in it: type a question about the articles")
    return cleaned


def rewrite_followup(question: str, previous: Sequence[str], template: str) -> str:
    """Fold the previous question into a follow-up that cannot stand alone ('ومتى حدث ذلك؟')."""
    if not previous:
        return question
    words = {w[1:] if w.startswith("و") and len(w) > 3 else w for w in normalize(question).split()}
    content = terms(question)
    if len(content) > 3 and not words & _REFERRING:
        return question
    return template.format(previous=previous[-1], question=question)


def evidence_units(text: str, max_words: int = 30) -> list[tuple[int, int]]:
    """Sentence spans of a text; an over-long sentence becomes overlapping pairs of clauses, so that a clause
    keeps the fact stated just before it ('زار الدوحة في فبراير 2007، وهي أول زيارة له إلى قطر كرئيس')."""
    units = []
    for s, e in sentence_spans(text):
        if len(text[s:e].split()) <= max_words:
            units.append((s, e))
            continue
        clauses, start = [], s
        for m in _CLAUSE.finditer(text, s, e):
            if len(text[start : m.start()].split()) >= 8:
                clauses.append((start, m.start()))
                start = m.end()
        clauses.append((start, e))
        units += [(a[0], b[1]) for a, b in zip(clauses, clauses[1:], strict=False)] or clauses
    return units


def select_evidence(question: str, passages: list[Passage], limit: int, idf) -> list[Evidence]:
    """The sentences of the retrieved passages that best cover the question's terms, in reading order.

    Sentences far below the best one are left out: distractors make a small model answer from the wrong passage.
    idf: a function from terms to their weights (a store's idf).
    """
    wanted = set(terms(question))
    weight = idf(wanted)
    total = sum(weight.values()) or 1.0
    scored = []
    for rank, passage in enumerate(passages):
        chunk = passage.chunk
        for s, e in evidence_units(chunk.text):
            coverage = sum(weight[t] for t in wanted & set(terms(chunk.text[s:e]))) / total
            # Coverage decides; the passage's similarity and rank break ties between sentences.
            scored.append((coverage + 0.2 * passage.dense - 0.01 * rank, rank, s, e, passage))
    if not scored:
        return []
    scored.sort(key=lambda x: -x[0])
    best = [x for x in scored[:limit] if x[0] >= RELATIVE_EVIDENCE * scored[0][0]]
    best.sort(key=lambda x: (x[1], x[2]))
    numbers: dict[int, int] = {}
    evidence = []
    for _, rank, s, e, passage in best:
        n = numbers.setdefault(rank, len(numbers) + 1)
        c = passage.chunk
        evidence.append(Evidence(n, c.article_id, c.title, c.date, c.start + s, c.start + e, c.text[s:e]))
    return evidence


def whole_passages(passages: list[Passage]) -> list[Evidence]:
    """Each retrieved passage whole, as evidence (the baseline that sentence selection is measured against)."""
    return [
        Evidence(n, p.chunk.article_id, p.chunk.title, p.chunk.date, p.chunk.start, p.chunk.end, p.chunk.text)
        for n, p in enumerate(passages, 1)
    ]


def format_evidence(evidence: list[Evidence]) -> str:
    """'[n] (title، date) sentence sentence' lines, one per passage."""
    lines: dict[int, list[str]] = {}
    heads: dict[int, str] = {}
    for ev in evidence:
        heads[ev.n] = f"[{ev.n}] ({heading(ev)})"
        lines.setdefault(ev.n, []).append(" ".join(ev.text.split()))  # one line per passage: data, never a header
    return "\n".join(f"{heads[n]} {' '.join(lines[n])}" for n in sorted(lines))


def clean_reply(reply: str) -> str:
    """The answer part of a model reply: no echoed prompt headers, at most three sentences."""
    text = reply.strip()
    text = re.sub(r"^(الاجابة|الإجابة|الجواب|Answer)\s*[:：]\s*", "", text)
    text = re.split(r"\n\s*(?:المقاطع|السؤال|\[\d+\]\s*\()", text)[0]
    text = " ".join(line.strip(" -•*") for line in text.splitlines() if line.strip())
    spans = sentence_spans(text)[:3]
    return text[: spans[-1][1]] if spans else ""


def is_refusal(reply: str) -> bool:
    """True when the model says the sources do not hold the answer."""
    norm = normalize(reply)
    return not norm.strip() or any(normalize(r) in norm for r in _REFUSALS)


class Assistant:
    """Answers questions about the indexed articles, citing the passages that support each sentence."""

    def __init__(self, config: Config, embedder: Embedder, store: Store, generator: Generator | None = None):
        self.config = config
        self.embedder = embedder
        self.store = store
        self._generator = generator

    @classmethod
    def load(cls, config: Config | None = None, generator: Generator | None = None) -> Assistant:
        """Open the store and load the embedder named by the config; the generator loads on first use."""
        config = config or load_config()
        store = make_store(config)
        manifest = store.manifest()  # no index: say so before loading the embedder
        embedder = make_embedder(config)
        check_compatible(manifest, store.where, embedder.id, config.chunk_size, config.chunk_overlap)
        return cls(config, embedder, store, generator)

    @property
    def generator(self) -> Generator:
        """The generator, loaded once per process on first use."""
        if self._generator is None:
            self._generator = make_generator(self.config)
        return self._generator

    def warm_up(self) -> None:
        """Load the generator and have it read the fixed prompt prefix (system prompt and worked example) into
        llama.cpp's cache, so that the first question reads no more of its prompt than later ones do."""
        for _ in self.generator.generate(self._messages("", []), 1, STOP, 0.0):
            pass

    def article(self, source: str) -> Article:
        """An indexed article by file name (only indexed articles can be read this way)."""
        return self.store.article(source)

    def search(self, question: str, k: int | None = None, mode: Mode = "hybrid") -> list[Passage]:
        """The passages that best match a question."""
        question = check_question(question, self.config.max_question_chars)
        return search(self.store, self.embedder, question, k or self.config.top_k, mode)

    def ask(self, question: str, history: Sequence[str] = ()) -> Answer:
        """Answer a question (history: the earlier questions of the conversation, oldest first)."""
        *_, answer = self.stream(question, history)
        return answer

    def stream(self, question: str, history: Sequence[str] = ()) -> Iterator[str | Answer]:
        """Yield the answer's tokens as the model writes them, then the checked Answer."""
        started = time.perf_counter()
        question = check_question(question, self.config.max_question_chars)
        full_question = rewrite_followup(question, list(history), load_prompt("followup"))
        # BM25 over Arabic terms only matches stray English fragments of a question in another language.
        mode = "hybrid" if is_arabic(full_question) else "dense"
        passages = search(self.store, self.embedder, full_question, self.config.top_k, mode)
        if self.config.evidence == "passages":
            evidence = whole_passages(passages)
        elif not is_arabic(full_question):
            # Sentence selection matches terms, and an English question shares none with Arabic articles:
            # give the model the two best passages whole instead.
            evidence = whole_passages(passages[:2])
        else:
            evidence = select_evidence(full_question, passages, self.config.evidence_sentences, self.store.idf)
        timings = {"retrieve": time.perf_counter() - started}
        if not evidence or not self._answerable(full_question, passages):
            timings["total"] = time.perf_counter() - started
            yield self._refusal(question, passages, timings, "")
            return
        messages = self._messages(full_question, evidence)
        pieces: list[str] = []
        for piece in self.generator.generate(messages, self.config.max_tokens, STOP, self.config.temperature):
            if not pieces:
                timings["first_token"] = time.perf_counter() - started
            pieces.append(piece)
            yield piece
        reply = "".join(pieces)
        timings["generate"] = time.perf_counter() - started - timings["retrieve"]
        timings["total"] = time.perf_counter() - started
        text, citations = attribute(clean_reply(reply), evidence, full_question) if not is_refusal(reply) else ("", [])
        if not any(c.supported for c in citations):
            yield self._refusal(question, passages, timings, reply)
            return
        yield Answer(question, text, citations, False, passages, timings, reply)

    def _answerable(self, question: str, passages: list[Passage]) -> bool:
        """Refuse before generating when no passage shares a term with the question, or when the passages neither
        cover the question's terms nor resemble it. Measured on evals/gold.jsonl: the second rule stops 11 of the 16
        unanswerable questions before the model can invent an answer, and 1 of the 82 answerable ones. Terms mean
        little across languages, so only Arabic questions are gated on them.
        """
        wanted = set(terms(question))
        if not wanted or not is_arabic(question):
            return True
        found = set().union(*(terms(f"{p.chunk.title} {p.chunk.text}") for p in passages))
        if not wanted & found:
            return False
        idf = self.store.idf(wanted)
        coverage = sum(idf[t] for t in wanted & found) / sum(idf.values())
        return coverage >= MIN_COVERAGE or passages[0].dense >= self.config.min_similarity

    def _messages(self, question: str, evidence: list[Evidence]) -> list[dict]:
        """System prompt and a worked example (a fixed prefix, cached by llama.cpp), then evidence and question."""
        budget = self.config.n_ctx - self.config.max_tokens - 64
        count = getattr(self.generator, "count_tokens", lambda text: math.ceil(len(text) / 2))
        while True:
            messages = [
                {"role": "system", "content": load_prompt("system")},
                {"role": "user", "content": load_prompt("example_question")},
                {"role": "assistant", "content": load_prompt("example_answer")},
                {"role": "user", "content": load_prompt("question").format(
                    passages=format_evidence(evidence), question=question)},
            ]
            needed = count("\n".join(m["content"] for m in messages)) + 16 * len(messages)
            if needed <= budget:
                return messages
            if len(evidence) <= 1:  # never send llama.cpp a prompt it cannot hold
                raise RagError(f"the question and its evidence need about {needed} tokens but n_ctx "
                               f"{self.config.n_ctx} leaves {budget}: ask a shorter question or raise n_ctx")
            evidence = evidence[:-1]  # keep the prompt inside n_ctx: drop the weakest-placed sentence

    def _refusal(self, question: str, passages: list[Passage], timings: dict, reply: str) -> Answer:
        name = "refusal" if is_arabic(question) else "refusal.en"
        return Answer(question, load_prompt(name), [], True, passages, timings, reply)
