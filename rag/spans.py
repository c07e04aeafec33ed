"""Spans of the evidence: the token prefix tree a reader's reply is confined to, and finding a reply in the evidence.

Pure functions over texts and a model's tokenizer (passed in), tested on tiny Arabic inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rag.normalize import normalize

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


def find_span(reply: str, spans: Sequence[str]) -> Found | None:
    """The first span holding the reply word for word (white space folded), with offsets into that span."""
    words = reply.split()
    if not words:
        return None
    for index, span in enumerate(spans):
        starts = word_starts(span)
        tokens = span.split()
        for i in range(len(tokens) - len(words) + 1):
            if tokens[i : i + len(words)] == words:
                start = starts[i]
                end = starts[i + len(words) - 1] + len(words[-1])
                return Found(index, start, end)
    return None


def match_span(reply: str, spans: Sequence[str], min_overlap: float = 0.6) -> Found | None:
    """The run of words of a span that best matches a free reply (normalized spelling), if it shares at least
    min_overlap of the reply's words: how a reply the model wrote in its own words is mapped onto the evidence."""
    wanted = [normalize(w) for w in reply.split()]
    if not wanted:
        return None
    best: tuple[float, int, Found] | None = None
    for index, span in enumerate(spans):
        starts = word_starts(span)
        words = [normalize(w) for w in span.split()]
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + 2 * len(wanted)) + 1):
                shared = _overlap(wanted, words[i:j])
                score = 2 * shared / (len(wanted) + j - i)
                if shared / len(wanted) >= min_overlap and (best is None or score > best[0]):
                    best = (score, -(j - i), Found(index, starts[i], starts[j - 1] + len(span.split()[j - 1])))
    return best[2] if best else None


def _overlap(a: list[str], b: list[str]) -> int:
    """Words of a found in b (each word of b used once), comparing words without a leading و/ال clitic."""
    pool = [_bare(w) for w in b]
    shared = 0
    for word in a:
        bare = _bare(word)
        if bare in pool:
            pool.remove(bare)
            shared += 1
    return shared


def _bare(word: str) -> str:
    word = word.strip(".,;:!?\"'()«»[]،؛؟")
    for prefix in ("وال", "بال", "لل", "ال", "و"):
        if word.startswith(prefix) and len(word) - len(prefix) >= 2:
            return word[len(prefix):]
    return word
