"""Arabic normalization for matching: spelling variants fold together, display text is never touched."""

import pytest

from rag.normalize import fold_script, is_arabic, normalize, stem, terms, tokens


def test_tashkeel_and_tatweel_are_stripped():
    assert normalize("مُحَمَّدٌ") == "محمد"
    assert normalize("قطـــر") == "قطر"
    assert normalize("الْقُرْآن") == "القران"


@pytest.mark.parametrize("alef", ["أ", "إ", "آ", "ٱ"])
def test_alef_forms_fold_to_bare_alef(alef):
    assert normalize(f"{alef}مير") == "امير"


def test_yeh_forms_fold_to_arabic_yeh():
    assert normalize("على") == "علي"  # alef maqsura
    assert normalize("فی") == "في"  # Persian yeh
    assert normalize("روسی") == normalize("روسي") == "روسي"


def test_persian_keheh_folds_to_kaf():
    assert normalize("کما") == "كما"
    assert normalize("موسکو") == "موسكو"


def test_teh_marbuta_folds_to_heh_for_matching():
    assert normalize("دولة") == normalize("دوله") == "دوله"


def test_arabic_indic_and_persian_digits_become_ascii():
    assert normalize("٢٠٠٧") == "2007"
    assert normalize("۲۰۰۷") == "2007"
    assert normalize("عام ١٩٨٨") == "عام 1988"


def test_nfkc_folds_presentation_forms_and_fullwidth_digits():
    assert normalize("ﻻ") == "لا"  # lam-alef ligature
    assert normalize("ﷲ") == "الله"
    assert normalize("２０２２") == "2022"


def test_arabic_punctuation_and_case_fold():
    assert normalize("ماذا؟ نعم، Putin") == "ماذا? نعم, putin"


def test_persian_lettered_text_gives_the_same_terms_as_standard_arabic():
    persian = "تلقی أمیر قطر رسالة شفهیة من الرئیس الروسی کما تناولت الوضع فی سوریا ۲۰۲۲"
    standard = "تلقى أمير قطر رسالة شفهية من الرئيس الروسي كما تناولت الوضع في سوريا 2022"
    assert terms(persian) == terms(standard)
    assert "2022" in terms(persian)


def test_tokens_drop_punctuation_and_keep_digits():
    assert tokens("قطر، روسيا! (2007)") == ["قطر", "روسيا", "2007"]


def test_terms_drop_stopwords_and_question_words():
    assert terms("متى زار بوتين قطر؟") == ["زار", "بوت", "قطر"]  # light10 also cuts -ين
    assert terms("ما هو الذي في") == []
    assert terms("what is the capital of Japan") == ["capital", "japan"]


def test_stopwords_with_the_conjunction_attached_are_dropped():
    assert terms("وكانت الزيارة وفي الدوحة وهي") == ["زيار", "دوح"]
    assert terms("وقطر") == ["قطر"]  # a content word keeps its stem


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("والكتاب", "كتاب"),  # conjunction + article
        ("بالدوحة", "دوح"),  # preposition + article, teh marbuta suffix
        ("للرئيس", "رئيس"),
        ("المعلمون", "معلم"),  # plural suffix
        ("العلاقات", "علاق"),
        ("كتابها", "كتاب"),  # possessive suffix
        ("وقطر", "قطر"),
        ("قطر", "قطر"),  # too short to strip anything
        ("ولد", "ولد"),  # a leading waw is kept when only two letters would remain
        ("الم", "الم"),  # the article is kept when fewer than two letters would remain
    ],
)
def test_light10_stemmer(word, expected):
    assert stem(normalize(word)) == expected


def test_stemming_makes_inflections_match():
    assert terms("العلاقات القطرية") == terms("وعلاقات قطرية")


def test_fold_script_is_mild_and_keeps_display_spelling():
    assert fold_script("الرئیس الروسی کما") == "الرئيس الروسي كما"
    assert fold_script("مدرسۀ") == "مدرسة"
    assert fold_script("عام ۲۰۰۷ و١٩٨٨") == "عام 2007 و1988"
    assert fold_script("قطـــر") == "قطر"
    # Unlike normalize(), hamza, tashkeel and teh marbuta stay: embedding models know them.
    assert fold_script("أميرُ دولة") == "أميرُ دولة"


def test_is_arabic():
    assert is_arabic("متى زار بوتين قطر؟")
    assert is_arabic("متى زار Putin قطر؟")  # mostly Arabic letters
    assert not is_arabic("When did Putin visit Qatar?")
    assert not is_arabic("When did بوتين visit Qatar?")
    assert is_arabic("2007 ؟")  # no letters at all: Arabic is the default
