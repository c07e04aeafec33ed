"""Property tests: text handling never crashes and keeps its invariants on random Arabic and mixed text."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.article import Article
from rag.chunk import chunk_article, sentence_spans
from rag.cite import attribute, parse_markers, strip_markers, support
from rag.dates import find_dates
from rag.evidence import Evidence
from rag.ingest import clean
from rag.normalize import fold_script, normalize, terms, tokens

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ARABIC_WORDS = (
    "قطر روسيا بوتين الدوحة أمیر الرئیس کما زيارة في من إلى على عام 2007 ٢٠٠٧ ۲۰۰۷ مُحَمَّد قطـــر ﻻ "
    "العلاقات وكانت الغاز أكتوبر 12 2022-10-12 Putin Qatar visit 🇶🇦 🙂"
).split()
PUNCTUATION = [" ", " ", " ", "\n", "\n\n", ".", ". ", "؟", "?", "!", "،", "؛", ", ", "«", "»", '"', "[1]", "[2]",
               "[ 12 ]", "\t", "\u200f", "\u0640", "\u064e", "-", "…", "(", ")", ":"]

arabic_text = st.lists(st.sampled_from(ARABIC_WORDS + PUNCTUATION), max_size=80).map("".join)
any_text = st.one_of(arabic_text, st.text(max_size=200), st.text(alphabet=st.characters(min_codepoint=0x600,
                                                                                         max_codepoint=0x6FF)))


@FUZZ
@given(any_text)
def test_normalize_is_idempotent_and_total(text):
    once = normalize(text)
    assert normalize(once) == once
    assert "\u0640" not in once


@FUZZ
@given(any_text)
def test_terms_and_tokens_never_raise_and_are_normalized(text):
    for term in terms(text):
        assert term and " " not in term
        assert normalize(term) == term
    for token in tokens(text):
        assert token == normalize(token)


@FUZZ
@given(any_text)
def test_fold_script_keeps_the_length_of_text_without_tatweel(text):
    assert len(fold_script(text)) == len(text.replace("\u0640", ""))


@FUZZ
@given(any_text)
def test_dates_and_cleaning_never_raise(text):
    for iso in find_dates(text):
        assert len(iso) == 10 and iso[4] == iso[7] == "-"
    title, date, cleaned = clean(text)
    assert isinstance(title, str) and isinstance(cleaned, str)
    assert date is None or len(date) == 10


@FUZZ
@given(arabic_text.map(str.strip).filter(bool), st.integers(20, 300), st.integers(0, 60))
def test_chunk_article_invariants(text, size, overlap):
    overlap = min(overlap, size - 1)
    article = Article("x.txt", "عنوان", None, text, "0" * 64)
    chunks = chunk_article(article, size, overlap)
    assert chunks
    last_start = -1
    covered = set()
    for i, c in enumerate(chunks):
        assert c.text == text[c.start : c.end]
        assert 0 <= c.start < c.end <= len(text)
        assert len(c.text) <= size
        assert c.start >= last_start
        assert c.id == f"x.txt#{i}"
        last_start = c.start
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


@FUZZ
@given(any_text)
def test_sentence_spans_are_ordered_trimmed_and_cover_the_text(text):
    spans = sentence_spans(text)
    end = 0
    for s, e in spans:
        assert end <= s < e <= len(text)
        assert not text[s].isspace() and not text[e - 1].isspace()
        assert text[end:s].strip() == ""  # only white space between sentences
        end = e
    assert text[end:].strip() == ""


marked_text = st.lists(
    st.one_of(st.sampled_from([w for w in ARABIC_WORDS + PUNCTUATION if "[" not in w]),
              st.integers(0, 999).map(lambda n: f"[{n}]"), st.integers(0, 999).map(lambda n: f" [ {n} ]")),
    max_size=40,
)


@FUZZ
@given(marked_text)
def test_markers_are_parsed_in_order_and_stripped_completely(parts):
    text = "".join(parts)
    expected = [int(p.strip(" []")) for p in parts if p.strip().startswith("[")]
    assert parse_markers(text) == expected
    stripped = strip_markers(text)
    assert "[" not in stripped and "]" not in stripped
    assert stripped == stripped.strip()


@FUZZ
@given(any_text)
def test_marker_functions_never_raise(text):
    assert all(0 <= n < 1000 for n in parse_markers(text))
    assert len(strip_markers(text)) <= len(text)


evidence_text = arabic_text.filter(lambda t: t.strip())


@FUZZ
@given(any_text, st.lists(evidence_text, max_size=4))
def test_attribute_never_raises_and_numbers_its_citations(answer, texts):
    evidence = [Evidence(n, f"s{n}.txt", "t", None, 0, len(t), t) for n, t in enumerate(texts, start=1)]
    for e in evidence:
        assert 0.0 <= support(answer, e.text) <= 1.0
    text, citations = attribute(answer, evidence)
    assert [c.n for c in citations] == list(range(1, len(citations) + 1))
    assert set(parse_markers(text)) <= {c.n for c in citations}
    for c in citations:
        assert c.text in texts and 0.34 <= c.score <= 1.0
        assert c.supported == (c.score >= 0.6)
