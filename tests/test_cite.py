"""Citations are decided in code: every kept sentence points at the evidence that supports it."""

import pytest

from rag.cite import attribute, parse_markers, strip_markers, support
from rag.evidence import Evidence

VISIT = Evidence(1, "a_visit.txt", "زيارة بوتين", "2022-10-12", 23, 95,
                 "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007.")
RELATIONS = Evidence(2, "c_relations.txt", "العلاقات القطرية الروسية", None, 26, 96,
                     "تعود العلاقات الدبلوماسية بين قطر وروسيا إلى الأول من أغسطس عام 1988.")
EVIDENCE = [VISIT, RELATIONS]


def test_parse_markers_in_order():
    assert parse_markers("زار بوتين الدوحة [1]. وعاد [ 2 ] ثم [12][3]") == [1, 2, 12, 3]
    assert parse_markers("لا مراجع هنا [a] [] [1234]") == []


def test_strip_markers_removes_markers_and_the_space_before_them():
    assert strip_markers("زار بوتين الدوحة [1][2]. وعاد [ 3 ]") == "زار بوتين الدوحة. وعاد"
    assert strip_markers("بلا مراجع.") == "بلا مراجع."


def test_support_counts_shared_content_terms():
    assert support("زار بوتين الدوحة عام 2007", VISIT.text) == pytest.approx(4 / 5)  # زار ≠ بزيارة
    assert support("بوتين في الدوحة", VISIT.text) == 1.0
    assert support("الغاز الطبيعي المسال", VISIT.text) == 0.0


def test_support_numbers_must_match_exactly():
    assert support("زار بوتين الدوحة عام 2008", VISIT.text) == 0.0
    assert support("زار بوتين الدوحة عام 200", VISIT.text) == 0.0  # no prefix matching for numbers
    assert support("بوتين في الدوحة عام ٢٠٠٧", VISIT.text) == 1.0  # Arabic-Indic digits are the same number


def test_support_matches_persian_and_arabic_letter_variants():
    persian = "نقل الرسالة نائب وزیر الخارجیة الروسی"
    assert support(persian, "نقل الرسالة نائب وزير الخارجية الروسي") == 1.0
    assert support("نقل الرسالة نائب وزير الخارجية الروسي", persian) == 1.0


def test_support_of_a_sentence_without_content_terms_is_full():
    assert support("نعم [1].", VISIT.text) == 1.0


def test_attribute_renumbers_markers_by_supporting_evidence():
    answer = "بدأت العلاقات الدبلوماسية عام 1988 [1]. زار بوتين الدوحة عام 2007 [2]."
    text, citations = attribute(answer, EVIDENCE)
    # The model's numbers were swapped; citations follow the evidence that actually supports each sentence.
    assert text == "بدأت العلاقات الدبلوماسية عام 1988 [1]. زار بوتين الدوحة عام 2007 [2]."
    assert [(c.n, c.source, c.supported) for c in citations] == [(1, "c_relations.txt", True), (2, "a_visit.txt", True)]
    assert (citations[1].start, citations[1].end, citations[1].text) == (VISIT.start, VISIT.end, VISIT.text)


def test_attribute_adds_markers_the_model_forgot_and_shares_one_citation_per_span():
    text, citations = attribute("زار بوتين الدوحة عام 2007. ووصل بوتين في فبراير 2007!", EVIDENCE)
    assert text == "زار بوتين الدوحة عام 2007 [1]. ووصل بوتين في فبراير 2007 [1]!"
    assert [c.source for c in citations] == ["a_visit.txt"]


def test_attribute_drops_an_invented_sentence():
    text, citations = attribute("زار بوتين الدوحة عام 2007 [1]. عدد سكان قطر 11 مليون نسمة [1].", EVIDENCE)
    assert text == "زار بوتين الدوحة عام 2007 [1]."
    assert "11" not in text
    assert len(citations) == 1


def test_attribute_marks_a_weakly_supported_sentence_unsupported():
    text, [citation] = attribute("زار بوتين الدوحة وناقش الغاز.", EVIDENCE)  # 2 of 5 terms in the evidence
    assert text == "زار بوتين الدوحة وناقش الغاز [1]."
    assert citation.source == "a_visit.txt"
    assert not citation.supported
    assert citation.score == pytest.approx(0.4)


def test_attribute_ignores_a_marker_out_of_range():
    text, [citation] = attribute("زار بوتين الدوحة عام 2007 [9].", EVIDENCE)
    assert text == "زار بوتين الدوحة عام 2007 [1]."
    assert citation.source == "a_visit.txt"


def test_the_models_marker_breaks_a_tie():
    twin = Evidence(2, "d_copy.txt", "نسخة", None, 0, len(VISIT.text), VISIT.text)
    _, [citation] = attribute("زار بوتين الدوحة عام 2007 [2].", [VISIT, twin])
    assert citation.source == "d_copy.txt"
    _, [citation] = attribute("زار بوتين الدوحة عام 2007 [1].", [VISIT, twin])
    assert citation.source == "a_visit.txt"


def test_attribute_without_evidence_or_answer():
    assert attribute("زار بوتين الدوحة عام 2007 [1].", []) == ("", [])
    assert attribute("", EVIDENCE) == ("", [])
    assert attribute("[1] [2]", EVIDENCE) == ("", [])


def test_an_echo_of_the_question_supports_nothing_but_yes_or_no_does():
    question = "متى افتتحت سفارتا قطر وروسيا؟"
    evidence = "تم افتتاح سفارتي قطر وروسيا في نوفمبر 1989."
    assert support("متى افتتحت سفارتا قطر وروسيا؟", evidence, question) == 0.0
    assert support("افتتحت سفارتا قطر وروسيا في نوفمبر 1989", evidence, question) > 0.6
    assert support("نعم، افتتحت سفارتا قطر وروسيا", evidence, "هل افتتحت سفارتا قطر وروسيا؟") > 0.6
