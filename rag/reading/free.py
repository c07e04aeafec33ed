"""The free reader, kept for comparison (`reader = "free"`): the model writes a short answer in its own words and
rag.cite decides which evidence supports each of its sentences, dropping what none does."""

from __future__ import annotations

import re

from rag.chunk import sentence_spans
from rag.cite import attribute
from rag.config import Config
from rag.evidence import Evidence, format_evidence
from rag.generators import Generator
from rag.normalize import normalize
from rag.prompts import load_prompt
from rag.reading import Reading

STOP = ["\n\n", "المقاطع:", "السؤال:", "<|im_end|>", "<|endoftext|>"]
_REFUSALS = ("لا تتضمن المصادر", "لا تتضمن المقاطع", "لا توجد اجابه", "do not contain", "not in the sources")


def messages(question: str, evidence: list[Evidence]) -> list[dict]:
    """System prompt and a worked example (a fixed prefix, cached by llama.cpp), then evidence and question."""
    return [
        {"role": "system", "content": load_prompt("system")},
        {"role": "user", "content": load_prompt("example_question")},
        {"role": "assistant", "content": load_prompt("example_answer")},
        {"role": "user", "content": load_prompt("question").format(passages=format_evidence(evidence),
                                                                    question=question)},
    ]


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


class FreeReader:
    """The model writes the answer; rag.cite keeps the sentences the evidence supports, with their citations."""

    def __init__(self, config: Config, generator: Generator):
        self.generator = generator
        self.max_tokens, self.temperature = config.max_tokens, config.temperature

    def messages(self, question: str, evidence: list[Evidence], kind: str) -> list[dict]:
        """The chat the model reads: the sentences shown to it."""
        return messages(question, [ev for ev in evidence if ev.shown])

    def read(self, question: str, evidence: list[Evidence], kind: str) -> Reading:
        """The model's reply, checked: refused when it says the evidence does not answer, or nothing is supported."""
        evidence = [ev for ev in evidence if ev.shown]
        chat = messages(question, evidence)
        reply = "".join(self.generator.generate(chat, self.max_tokens, STOP, self.temperature))
        text, citations = attribute(clean_reply(reply), evidence, question) if not is_refusal(reply) else ("", [])
        if not any(c.supported for c in citations):
            return Reading(kind, method="free", raw=reply)
        return Reading(kind, method="free", raw=reply, text=text, citations=citations)
