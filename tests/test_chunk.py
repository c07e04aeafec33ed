"""Passages with exact offsets into the article, cut at sentence ends; sentences split on Arabic punctuation."""

import pytest

from rag.article import Article
from rag.chunk import chunk_article, sentence_spans

SENTENCES = [
    "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007.",
    "وهي أول زيارة له إلى قطر كرئيس!",
    "هل بحث الجانبان التعاون في مجال الغاز الطبيعي؟",
    "تعود العلاقات الدبلوماسية بين قطر وروسيا إلى عام 1988.",
]


def _article(text: str) -> Article:
    return Article("a.txt", "زيارة بوتين", "2022-10-12", text, "0" * 64)


@pytest.mark.parametrize(("size", "overlap"), [(60, 0), (80, 20), (200, 40), (1000, 80)])
def test_every_chunk_is_an_exact_slice_within_size(size, overlap):
    article = _article(" ".join(SENTENCES) + "\n\n" + "\n".join(SENTENCES))
    chunks = chunk_article(article, size, overlap)
    assert chunks
    for i, c in enumerate(chunks):
        assert c.text == article.text[c.start : c.end]
        assert len(c.text) <= size
        assert c.text == c.text.strip()
        assert (c.id, c.article_id, c.title, c.date) == (f"a.txt#{i}", "a.txt", "زيارة بوتين", "2022-10-12")


def test_chunks_cover_the_whole_article_in_order():
    article = _article("\n".join(SENTENCES * 3))
    chunks = chunk_article(article, 100, 20)
    starts = [c.start for c in chunks]
    assert starts == sorted(set(starts))
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(article.text) if not ch.isspace())


def test_repeated_sentences_get_their_own_offsets():
    article = _article(" ".join(["قطر دولة عربية."] * 40))
    chunks = chunk_article(article, 50, 10)
    assert len(chunks) > 5
    assert [c.start for c in chunks] == sorted({c.start for c in chunks})  # not all pointing at the first copy
    assert chunks[-1].end == len(article.text)


def test_chunks_end_at_sentence_boundaries_when_they_can():
    article = _article(" ".join(SENTENCES))
    for c in chunk_article(article, 80, 0):
        assert c.text.endswith((".", "!", "؟"))


def test_short_article_is_one_chunk():
    article = _article(SENTENCES[0])
    [chunk] = chunk_article(article, 600, 80)
    assert (chunk.start, chunk.end, chunk.text) == (0, len(SENTENCES[0]), SENTENCES[0])


def test_sentence_spans_split_on_arabic_punctuation_and_new_lines():
    text = "متى زار بوتين قطر؟ في عام 2007. زيارة مهمة! وبحث الجانبان الغاز\nالسطر التالي"
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "متى زار بوتين قطر؟",
        "في عام 2007.",
        "زيارة مهمة!",
        "وبحث الجانبان الغاز",
        "السطر التالي",
    ]


def test_sentence_spans_keep_decimals_and_closing_quotes_and_trim_space():
    text = '  قال بوتين: "نحن أصدقاء." ونما الاقتصاد 2.5 في المئة.  \n\n'
    assert [text[s:e] for s, e in sentence_spans(text)] == ['قال بوتين: "نحن أصدقاء."', "ونما الاقتصاد 2.5 في المئة."]


def test_sentence_spans_of_blank_text():
    assert sentence_spans("") == []
    assert sentence_spans(" \n\n ") == []
