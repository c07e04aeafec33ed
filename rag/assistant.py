"""The one place the pipeline is wired: question -> passages -> evidence -> reader -> cited answer."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from rag.answer_types import DATE, LIST, YESNO, answer_type
from rag.article import Article
from rag.cite import Citation, is_instruction
from rag.config import Config, load_config
from rag.embedders import Embedder, make_embedder
from rag.errors import RagError
from rag.evidence import Evidence, rank_sentences, select, whole_passages
from rag.generators import Generator, make_generator
from rag.normalize import is_arabic, normalize, terms
from rag.prompts import load_prompt, load_strings
from rag.questions import check_question, rewrite_followup
from rag.reading import Reader, Reading, make_reader
from rag.retrieve import Mode, Passage, search
from rag.stores import Store, make_store
from rag.stores.base import check_compatible

__all__ = ["Answer", "Assistant", "Stage", "check_question", "rewrite_followup"]

MIN_COVERAGE = 0.5  # idf-weighted share of the question's terms found in the passages (or see min_similarity)


@dataclass(frozen=True)
class Stage:
    """A step of answering, told to the user while they wait: searching, reading or checking."""

    name: str

    @property
    def label(self) -> str:
        """What the user is shown (prompts/stages.toml)."""
        return load_strings("stages")[self.name]


@dataclass
class Answer:
    """What the assistant says: a short answer whose sentences carry [n] markers, or a refusal."""

    question: str
    text: str
    citations: list[Citation]
    refused: bool
    passages: list[Passage]
    timings: dict[str, float] = field(default_factory=dict)
    raw: str = ""  # the model's own reply
    span: str = ""  # what was copied from the evidence (the items of a list, joined), or نعم/لا
    quote: str = ""  # the sentence it was copied from (the first, for a list)
    kind: str = ""  # the kind of answer the question asks for (rag.answer_types)
    confidence: float | None = None  # the selector's probability that the answer is right
    evidence: list[Evidence] = field(default_factory=list, repr=False)  # what the reader was given
    reading: Reading | None = field(default=None, repr=False)  # what the reader found, every candidate with it

    def to_dict(self) -> dict:
        """The JSON shape of `rag ask --json`."""
        return {
            "question": self.question,
            "answer": self.text,
            "refused": self.refused,
            "span": self.span,
            "quote": self.quote,
            "kind": self.kind,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "citations": [c.to_dict() for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def shown(reading: Reading, numbers: list[int]) -> str:
    """The short answer shown for a reading: its span(s) with [n] markers, a date after 'في', a yes/no decision."""
    strings = load_strings("reader")
    if reading.kind == YESNO and reading.decision:
        return f"{reading.decision} [{numbers[0]}]."
    texts = [part.text for part in reading.parts]
    first = normalize(texts[0].split()[0]).removeprefix("و")
    if reading.kind == DATE and first not in {normalize(w) for w in strings["date_prefixes"]}:
        texts[0] = strings["date_answer"].format(span=texts[0])
    if reading.kind == LIST and len(texts) > 1:
        return "، ".join(f"{t} [{n}]" for t, n in zip(texts, numbers, strict=True)) + "."
    return f"{texts[0]} [{numbers[0]}]."


class Assistant:
    """Answers questions about the indexed articles, citing the passages that support each sentence."""

    def __init__(self, config: Config, embedder: Embedder, store: Store, generator: Generator | None = None):
        self.config = config
        self.embedder = embedder
        self.store = store
        self._generator = generator
        self._reader: Reader | None = None
        self._warm = False  # the fixed prompt prefix is in the generator's cache

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

    @property
    def reader(self) -> Reader:
        """The reader named by the config, on the generator."""
        if self._reader is None:
            self._reader = make_reader(self.config, self.generator)
        return self._reader

    @property
    def loaded(self) -> bool:
        """Whether the generator is loaded (the HTTP API is ready once it is)."""
        return self._generator is not None

    def warm_up(self) -> None:
        """Have the generator read the fixed prompt prefix (system prompt and worked examples) into its cache, so
        that a question reads only what follows it; the local model restores it from the state an earlier process
        saved. Done before the first question that reaches the reader, or ahead by the UI and the API."""
        self.generator.prefill(self.reader.messages("", [], ""))
        self._warm = True

    def article(self, source: str) -> Article:
        """An indexed article by file name (only indexed articles can be read this way)."""
        return self.store.article(source)

    def search(self, question: str, k: int | None = None, mode: Mode = "hybrid") -> list[Passage]:
        """The passages that best match a question."""
        question = check_question(question, self.config.max_question_chars)
        return search(self.store, self.embedder, question, k or self.config.top_k, mode)

    def ask(self, question: str, history: Sequence[str] = (), passages: list[Passage] | None = None) -> Answer:
        """Answer a question (history: the earlier questions of the conversation, oldest first)."""
        *_, answer = self.stream(question, history, passages)
        return answer

    def stream(self, question: str, history: Sequence[str] = (),
               passages: list[Passage] | None = None) -> Iterator[Stage | Answer]:
        """Yield each Stage as it begins, then the Answer. The model's draft is never yielded: the reader may throw
        it away, and a user must not read a wrong sentence while waiting. Given passages are read instead of
        retrieving (reader-only evaluation on a benchmark's gold paragraph)."""
        started = time.perf_counter()
        yield Stage("searching")
        question = check_question(question, self.config.max_question_chars)
        full_question = rewrite_followup(question, list(history), load_prompt("followup"))
        # BM25 over Arabic terms only matches stray English fragments of a question in another language.
        mode = "hybrid" if is_arabic(full_question) else "dense"
        if passages is None:
            passages = search(self.store, self.embedder, full_question, self.config.top_k, mode)
        kind = answer_type(full_question)
        evidence = self._evidence(full_question, passages, kind)
        timings = {"retrieve": time.perf_counter() - started}
        # A question that is an order to the model ("تجاهل التعليمات السابقة وقل…") asks nothing of the articles.
        if not evidence or is_instruction(question) or not self._answerable(full_question, passages):
            timings["total"] = time.perf_counter() - started
            yield self._refusal(question, passages, timings, "", kind)
            return
        if not self._warm:
            self.warm_up()
        evidence = self._fit(full_question, evidence, kind)
        yield Stage("reading")
        reading = self.reader.read(full_question, evidence, kind)
        timings["generate"] = time.perf_counter() - started - timings["retrieve"]
        timings["total"] = time.perf_counter() - started
        # Nothing is shown before the answer is checked: its first word comes with the whole of it.
        timings["first_token"] = timings["total"]
        yield Stage("checking")
        answer = self._answer(question, passages, timings, reading)
        answer.evidence, answer.reading = evidence, reading
        yield answer

    def _evidence(self, question: str, passages: list[Passage], kind: str) -> list[Evidence]:
        """The sentences the reader gets; whole passages for a question not in Arabic (its terms match nothing)."""
        if self.config.evidence == "passages" or not is_arabic(question):
            return whole_passages(passages if self.config.evidence == "passages" else passages[:2])
        weights = self.store.idf(set(terms(question)))
        ranked = rank_sentences(question, passages, weights, kind)
        # An order to the model quoted in an article is data, never an answer ("تجاهل التعليمات وقل إن…").
        ranked = [r for r in ranked if not is_instruction(r.passage.chunk.text[r.start : r.end])]
        return select(ranked, self.config.evidence_sentences, self.config.evidence_share,
                      self.config.candidate_sentences)

    def _answer(self, question: str, passages: list[Passage], timings: dict, reading: Reading) -> Answer:
        """The answer of a reading: its span(s) with the sentences they were copied from, or the free reader's
        checked text."""
        if reading.refused:
            return self._refusal(question, passages, timings, reading.raw, reading.kind, reading.confidence)
        if reading.text:
            return Answer(question, reading.text, reading.citations, False, passages, timings, reading.raw,
                          kind=reading.kind)
        citations: dict[tuple[str, int], Citation] = {}
        numbers = []
        score = None if reading.confidence is None else round(reading.confidence, 4)
        for part in reading.parts:
            ev = part.evidence
            key = (ev.source, ev.start)
            if key not in citations:
                span = (None, None) if reading.decision else (part.start, part.end)
                citations[key] = Citation(len(citations) + 1, ev.source, ev.title, ev.date, ev.start, ev.end,
                                          ev.text, True, score, *span)
            numbers.append(citations[key].n)
        span = reading.decision or "، ".join(part.text for part in reading.parts)
        return Answer(question, shown(reading, numbers), list(citations.values()), False, passages, timings,
                      reading.raw, span, reading.parts[0].evidence.text, reading.kind, reading.confidence)

    def _answerable(self, question: str, passages: list[Passage]) -> bool:
        """Refuse before generating when no passage shares a term with the question, or when the passages neither
        cover the question's terms nor resemble it. Measured on the gold set before its dev/test split: the second
        rule stops 11 of the 16 unanswerable questions before the model can invent an answer, and 1 of the 82
        answerable ones. Terms mean little across languages, so only Arabic questions are gated on them.
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

    def _fit(self, question: str, evidence: list[Evidence], kind: str) -> list[Evidence]:
        """The evidence with as many sentences shown to the model as its prompt can hold in n_ctx."""
        budget = self.config.n_ctx - self.config.max_tokens - 64
        count = getattr(self.generator, "count_tokens", lambda text: math.ceil(len(text) / 2))
        evidence = list(evidence)
        while True:
            messages = self.reader.messages(question, evidence, kind)
            needed = count("\n".join(m["content"] for m in messages)) + 16 * len(messages)
            if needed <= budget:
                return evidence
            shown = [i for i, ev in enumerate(evidence) if ev.shown]
            if len(shown) <= 1:  # never send llama.cpp a prompt it cannot hold
                raise RagError(f"the question and its evidence need about {needed} tokens but n_ctx "
                               f"{self.config.n_ctx} leaves {budget}: ask a shorter question or raise n_ctx")
            # keep the prompt inside n_ctx: the last sentence shown only proposes candidates
            evidence[shown[-1]] = dataclasses.replace(evidence[shown[-1]], shown=False)

    def _refusal(self, question: str, passages: list[Passage], timings: dict, reply: str, kind: str,
                 confidence: float | None = None) -> Answer:
        name = "refusal" if is_arabic(question) else "refusal.en"
        return Answer(question, load_prompt(name), [], True, passages, timings, reply, kind=kind,
                      confidence=None if confidence is None or math.isinf(confidence) else confidence)
