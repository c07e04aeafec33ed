"""Spans of the evidence: the token prefix tree a reader's reply is confined to, and finding a reply in the evidence.

Pure functions over texts and a model's tokenizer (passed in), tested on tiny Arabic inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rag.normalize import normalize, stem

_WORD = re.compile(r"\S+")
MAX_SPAN_TOKENS = 48  # longer copies are never a short answer: the prefix tree stops here


def word_starts(text: str) -> list[int]:
    """Character offsets where the words of a text begin."""
    return [m.start() for m in _WORD.finditer(text)]


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char in "\u064b\u064c\u064d\u064e\u064f\u0650\u0651\u0652\u0670\u0640"


def word_ends(data: bytes) -> set[int]:
    """Byte offsets of a UTF-8 text after which a reply may stop: right after a word (a letter or digit followed by
    anything else, or by the end)."""
    text = data.decode("utf-8")
    ends, at = set(), 0
    for i, char in enumerate(text):
        at += len(char.encode("utf-8"))
        if _is_word_char(char) and (i + 1 == len(text) or not _is_word_char(text[i + 1])):
            ends.add(at)
    return ends


@dataclass
class TokenTrie:
    """Token sequences that spell runs of whole words of some texts, as a prefix tree: node 0 is the root."""

    children: list[dict[int, int]] = field(default_factory=lambda: [{}])
    ends: list[bool] = field(default_factory=lambda: [False])

    def add(self, tokens: Sequence[int], stops: Sequence[bool]) -> None:
        """Add one token sequence; stops[i] says whether a reply may end after its first i + 1 tokens."""
        node = 0
        for token, stop in zip(tokens, stops, strict=True):
            child = self.children[node].get(token)
            if child is None:
                child = len(self.children)
                self.children[node][token] = child
                self.children.append({})
                self.ends.append(False)
            self.ends[child] = self.ends[child] or stop
            node = child

    def walk(self, tokens: Sequence[int]) -> int | None:
        """The node reached by a token sequence, or None if it leaves the tree."""
        node = 0
        for token in tokens:
            node = self.children[node].get(token)
            if node is None:
                return None
        return node


def token_trie(texts: Sequence[str], tokenize: Callable[[str], list[int]], piece: Callable[[int], bytes],
               whole: bool = False, limit: int = MAX_SPAN_TOKENS) -> TokenTrie:
    """The prefix tree of every run of whole words of the texts (whole: of each text from its first word to its
    last), as the model tokenizes it at the start of a reply: with and without a leading space, since " كلمة" and
    "كلمة" are different tokens."""
    trie = TokenTrie()
    for text in texts:
        text = " ".join(text.split())
        for start in [0] if whole else word_starts(text):
            for variant in (text[start:], " " + text[start:]):
                data = variant.encode("utf-8")
                tokens = tokenize(variant)[:limit]
                ends = {len(data)} if whole else word_ends(data)
                offsets, at = [], 0
                for token in tokens:
                    at += len(piece(token))
                    offsets.append(at)
                trie.add(tokens, [at in ends for at in offsets])
    return trie


@dataclass
class Found:
    """Where a reply was found: the index of the span and the character offsets inside it."""

    index: int
    start: int
    end: int


_EDGE = ".,;:!?\"'()«»“”[]،؛؟-–—"
_PROCLITICS = ("وبال", "وال", "فال", "بال", "كال", "لل", "ال", "و", "ف", "ب", "ل", "ك")


def _key(word: str) -> str:
    """How a word is compared: normalized spelling, no punctuation at its edges."""
    return normalize(word).strip(_EDGE)


def bare(key: str) -> str:
    """A word key without the conjunction, preposition or article written onto it (والاسلحة -> اسلحة), and
    without a plural or feminine ending (السياسات and السياسة name the same thing)."""
    for prefix in _PROCLITICS:
        if key.startswith(prefix) and len(key) - len(prefix) >= 2:
            return stem(key[len(prefix):])
    return stem(key)


def _words(text: str) -> list[tuple[int, int, str]]:
    """(start, end, key) of each word of a text that has letters or digits."""
    return [(m.start(), m.end(), k) for m in _WORD.finditer(text) if (k := _key(m.group()))]


def find_run(reply: str, spans: Sequence[str], min_share: float = 0.5) -> Found | None:
    """The longest run of consecutive words that a reply shares with one of the spans (words compared without
    the clitics written onto them: 'الاسلحة' names 'بالاسلحة'), if it holds at least min_share of the reply's
    words: the evidence a reply names, when the model copied it, or copied part of it. Ties: the first span."""
    reply_words = _words(reply)
    wanted = [bare(k) for _, _, k in reply_words]
    if not wanted:
        return None
    best: tuple[int, Found] | None = None
    for index, span in enumerate(spans):
        words = _words(span)
        keys = [bare(k) for _, _, k in words]
        for i in range(len(keys)):
            for j in range(len(wanted)):
                n = 0
                while i + n < len(keys) and j + n < len(wanted) and keys[i + n] == wanted[j + n]:
                    n += 1
                if n and (best is None or n > best[0]):
                    start = words[i][0] + _clitic_shift(span[words[i][0] : words[i][1]], reply_words[j][2])
                    best = (n, Found(index, start, words[i + n - 1][1]))
    if best is None or best[0] < min_share * len(wanted):
        return None
    return best[1]


def _clitic_shift(word: str, named: str) -> int:
    """Characters to skip at the start of a word of the evidence so that it begins as the reply's word does
    ('بالاسلحة' named as 'الاسلحة': 1)."""
    key = _key(word)
    extra = len(key) - len(named)
    if key[:extra].endswith("ال"):
        extra -= 2  # keep the article the reply left out ('دوحة' names 'الدوحة' of 'بالدوحة')
    elif key[:extra].endswith("لل"):
        return 0  # ل + ال written as لل: no way to keep the article
    lead = len(word) - len(word.lstrip(_EDGE))
    if extra > 0 and key.endswith(named) and len(word) - lead >= len(key):  # no marks dropped before it
        return lead + extra
    return 0


def find_span(reply: str, spans: Sequence[str]) -> Found | None:
    """The first span holding the whole reply word for word (clitics aside), with offsets into that span."""
    return find_run(reply, spans, min_share=1.0)
