"""Reading scraped articles: boilerplate out, title and publication date found, bad files skipped with a reason."""

from pathlib import Path

import pytest

from rag import ingest
from rag.config import PACKAGE_ROOT
from rag.ingest import clean, find_dates, load_articles, read_article

SEEDS = PACKAGE_ROOT / "seeds"
BODY = "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007، وهي أول زيارة له إلى قطر كرئيس."


@pytest.mark.parametrize(
    "crumb",
    [
        "تم نسخ عنوان المقال إلى الحافظة",
        "- تم نسخ عنوان المقال إلى الحافظة",
        "اترك تعليقاً",
        "زر الذهاب إلى الأعلى",
        "- ℃ 11 تركيا",
        "نعرض لكم زوارنا أهم وأحدث الأخبار فى المقال الاتي:",
        "أخبار متعلقة :",
    ],
)
def test_boilerplate_lines_are_removed(crumb):
    title, _, text = clean(f"زيارة بوتين إلى الدوحة\n{crumb}\n{BODY}\n{crumb}")
    assert title == "زيارة بوتين إلى الدوحة"
    assert text == f"زيارة بوتين إلى الدوحة\n{BODY}"


def test_repeated_title_is_kept_once():
    title, _, text = clean(f"زيارة بوتين إلى الدوحة\nزيارة بوتين إلى الدوحة\n{BODY}")
    assert title == "زيارة بوتين إلى الدوحة"
    assert text.count("زيارة بوتين إلى الدوحة") == 1


def test_text_is_cleaned_but_never_normalized():
    _, _, text = clean(f"زيارة بوتين إلى الدوحة\nالرئیس الروسی أمیر قطر فی الدوحة یوم الأحد مع الوفد المرافق\n{BODY}")
    assert "الرئیس الروسی أمیر" in text  # Persian letters and hamzas are shown as written


def test_date_after_the_title_wins_over_a_site_crumb_before_it():
    raw = f"- 22 نوفمبر 2024\nزيارة بوتين إلى الدوحة\n- 12 أكتوبر 2022, 6:30:23 م\n{BODY}"
    title, date, text = clean(raw)
    assert (title, date) == ("زيارة بوتين إلى الدوحة", "2022-10-12")
    assert "2024" not in text and "6:30" not in text  # date-only metadata lines are not article text


def test_trailing_date_is_cut_from_the_title():
    title, date, _ = clean(f"قطر وروسيا على طاولة النار, اليوم الأربعاء 16 أبريل 2025 06:33 مساءً\n{BODY}")
    assert (title, date) == ("قطر وروسيا على طاولة النار", "2025-04-16")


def test_a_page_without_headline_gets_a_short_title_from_its_first_paragraph():
    title, date, _ = clean("الوقت - " + BODY)
    assert title.startswith("قام الرئيس الروسي")
    assert len(title.split()) <= 12
    assert date is None  # a year in the text is not a publication date


@pytest.mark.parametrize(
    ("line", "iso"),
    [
        ("12 أكتوبر 2022", "2022-10-12"),
        ("12 نوفمبر/تشرين الثاني 2000", "2000-11-12"),
        ("الأربعاء 16 أبريل 2025", "2025-04-16"),
        ("2022-10-12", "2022-10-12"),
        ("١٢ أكتوبر ٢٠٢٢", "2022-10-12"),
        ("۱۲ اکتوبر ۲۰۲۲", "2022-10-12"),
        ("1 آب 2019", "2019-08-01"),
        ("12/10/2022", "2022-10-12"),
    ],
)
def test_find_dates(line, iso):
    assert find_dates(line) == [iso]


def test_find_dates_in_order_and_ignores_impossible_dates():
    assert find_dates("من 1 يناير 2020 إلى 2021-03-04") == ["2020-01-01", "2021-03-04"]
    assert find_dates("2022-13-40 و 45 مايو 2020 وعام 2007") == []


@pytest.mark.parametrize(
    ("name", "date", "title"),
    [
        ("000_11a389a790f70534.txt", None, None),
        ("001_8d1177553da27e06.txt", "2022-10-12",
         "بعد الإمارات.. بوتين يلتقي بأمير قطر في كازاخستان ويتباحثان حول الطاقة وأوكرانيا"),
        ("002_181bf0773d9abf8b.txt", "2000-11-12", None),
        ("003_73b545dee77c06cc.txt", "2025-04-16",
         "قطر وروسيا على طاولة النار: وساطة في أوكرانيا ورسائل مشفّرة من موسكو للشرق الأوسط"),
        ("004_8d7141d37cf2a675.txt", None, "بوتين: علاقاتنا مع قطر تتعزز ونتعاون في مشاريع غازية وإنسانية"),
    ],
)
def test_seed_articles_title_and_date(name, date, title):
    article = read_article(SEEDS / name)
    assert article.date == date
    if title:
        assert article.title == title
    assert article.title.removesuffix("…") in article.text.replace("\n", " ")


def test_seed_001_loses_its_crumbs_and_keeps_the_title_once():
    article = read_article(SEEDS / "001_8d1177553da27e06.txt")
    assert "℃" not in article.text
    assert "تم نسخ" not in article.text
    assert "22 نوفمبر 2024" not in article.text
    assert article.text.count(article.title) == 1


def test_seed_000_without_headline_gets_a_title_without_the_site_name():
    article = read_article(SEEDS / "000_11a389a790f70534.txt")
    assert article.title.startswith("قبل اکثر من اسبوعین تلقی تمیم بن حمد")
    assert article.title.endswith("…")


def test_seed_003_loses_the_greeting_and_the_date_in_its_title():
    article = read_article(SEEDS / "003_73b545dee77c06cc.txt")
    assert "نعرض لكم" not in article.text
    assert "2025" not in article.title


def test_all_seeds_load_without_warnings():
    articles, warnings = load_articles(SEEDS)
    assert [a.id for a in articles] == sorted(p.name for p in SEEDS.glob("*.txt"))
    assert warnings == []


def _write(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


def test_bad_files_are_skipped_with_a_clear_warning_while_the_others_load(tmp_path):
    good = f"زيارة بوتين إلى الدوحة\n{BODY}".encode()
    _write(tmp_path, "a_good.txt", good)
    _write(tmp_path, "b_empty.txt", b"")
    _write(tmp_path, "c_latin1.txt", "قطر".encode("cp1256"))  # Windows-1256, not UTF-8
    _write(tmp_path, "d_huge.txt", b"a" * (ingest.MAX_BYTES[".txt"] + 1))
    _write(tmp_path, "e_copy.txt", good)
    _write(tmp_path, "f_only_crumbs.txt", "اترك تعليقاً\nزر الذهاب إلى الأعلى".encode())
    _write(tmp_path, "g_photo.jpg", b"\xff\xd8\xff")  # not an article file: ignored silently
    (tmp_path / "h_folder.txt").mkdir()  # a folder named like an article: ignored

    articles, warnings = load_articles(tmp_path)

    assert [a.id for a in articles] == ["a_good.txt"]
    assert len(warnings) == 5
    by_file = {w.split(":")[0]: w for w in warnings}
    assert by_file["skipped b_empty.txt"] == "skipped b_empty.txt: empty"
    assert "not UTF-8" in by_file["skipped c_latin1.txt"] and "iconv" in by_file["skipped c_latin1.txt"]
    assert "larger than 5 MB" in by_file["skipped d_huge.txt"]
    assert "same content as a_good.txt" in by_file["skipped e_copy.txt"]
    assert "no text" in by_file["skipped f_only_crumbs.txt"]


def test_utf8_bom_and_windows_line_ends_are_accepted(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + f"زيارة بوتين إلى الدوحة\r\n{BODY}\r\n".encode())
    article = read_article(path)
    assert article.title == "زيارة بوتين إلى الدوحة"
    assert "\r" not in article.text and "\ufeff" not in article.text


def test_markdown_files_are_articles_too(tmp_path):
    (tmp_path / "note.md").write_text(f"زيارة بوتين إلى الدوحة\n{BODY}", encoding="utf-8")
    articles, _ = load_articles(tmp_path)
    assert [a.id for a in articles] == ["note.md"]


def test_a_sentence_with_a_degree_sign_or_the_verb_participated_is_content():
    text = ("عنوان الخبر هنا\nشارك المنتخب الجزائري في كأس العالم أربع مرات حتى الآن.\n"
            "تصل الحرارة إلى 565 °C في الفرن.\n- ℃ 11 تركيا")
    _, _, cleaned = clean(text)
    assert "شارك المنتخب" in cleaned and "565 °C" in cleaned and "تركيا" not in cleaned
