"""Reading scraped articles: boilerplate out, title and publication date found, bad files skipped with a reason."""

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag import ingest
from rag.config import PACKAGE_ROOT
from rag.dates import find_dates
from rag.ingest import clean, load_articles, read_article

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


# --- Only the corpus is read ------------------------------------------------------------------------------------

GOOD = f"زيارة بوتين إلى الدوحة\n{BODY}"


def _ids_and_warnings(folder: Path) -> tuple[list[str], dict[str, str]]:
    articles, warnings = load_articles(folder)
    return [a.id for a in articles], {w.split(":")[0].removeprefix("skipped "): w for w in warnings}


def test_links_that_leave_the_folder_are_skipped_and_never_read(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("كلمة السر هي 1234 " * 10, encoding="utf-8")
    (corpus / "a.txt").write_text(GOOD, encoding="utf-8")
    (corpus / "leak.txt").symlink_to("/etc/passwd")
    (corpus / "env.txt").symlink_to("/proc/self/environ")
    (corpus / "secret.txt").symlink_to(secret)
    (corpus / "relative.txt").symlink_to("../secret.txt")
    (corpus / "inside.txt").symlink_to(corpus / "a.txt")  # a link inside the corpus is fine (a duplicate here)
    (corpus / "broken.txt").symlink_to(tmp_path / "gone.txt")
    (corpus / "loop.txt").symlink_to(corpus / "loop.txt")
    ids, warnings = _ids_and_warnings(corpus)
    assert ids == ["a.txt"]
    for name in ("leak.txt", "env.txt", "secret.txt", "relative.txt"):
        assert "a link to a file outside the articles folder" in warnings[name]
    assert "same content as a.txt" in warnings["inside.txt"]
    assert "broken link" in warnings["broken.txt"] and "loop.txt" in warnings


def test_a_linked_folder_is_not_walked(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "sub" / "a.txt").write_text(GOOD, encoding="utf-8")
    (corpus / "etc").symlink_to("/etc")
    (corpus / "again").symlink_to(corpus)  # a loop
    ids, warnings = _ids_and_warnings(corpus)
    assert ids == ["sub/a.txt"]
    assert "a link to a folder (not followed)" in warnings["etc/"] and "again/" in warnings



def _swap_after_listing(monkeypatch, swap) -> None:
    """Make load_articles list the folder, then run swap() before it reads anything: a race, made deterministic."""
    real_listing = ingest.corpus_files

    def listed_then_swapped(folder):
        listing = real_listing(folder)
        swap()
        return listing

    monkeypatch.setattr(ingest, "corpus_files", listed_then_swapped)


def test_a_subfolder_swapped_for_a_link_after_listing_is_not_read(tmp_path, monkeypatch):
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    (corpus / "sub").mkdir(parents=True)
    outside.mkdir()
    (corpus / "sub" / "a.txt").write_text(GOOD, encoding="utf-8")
    (corpus / "b.txt").write_text(GOOD + " ب", encoding="utf-8")
    (outside / "a.txt").write_text("OUTSIDE " + GOOD, encoding="utf-8")
    (outside / "b.txt").write_text("OUTSIDE " + GOOD + " ب", encoding="utf-8")

    def swap():
        (corpus / "sub").rename(tmp_path / "moved")
        (corpus / "sub").symlink_to(outside)  # the folder listed is now a link to a folder outside
        (corpus / "b.txt").unlink()
        (corpus / "b.txt").symlink_to(outside / "b.txt")  # and the file listed, a link to a file outside

    _swap_after_listing(monkeypatch, swap)
    ids, warnings = _ids_and_warnings(corpus)
    assert ids == []
    for name in ("sub/a.txt", "b.txt"):
        assert warnings[name] == f"skipped {name}: became a link or left the folder while being read (not followed)"


@given(depth=st.integers(1, 4), swapped=st.integers(0, 4))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_component_swapped_for_a_link_after_listing_is_never_followed(tmp_path_factory, monkeypatch, depth,
                                                                          swapped):
    root = tmp_path_factory.mktemp("race")
    corpus, outside = root / "corpus", root / "outside"
    parts = [f"d{i}" for i in range(depth)] + ["a.txt"]
    for base, text in ((corpus, GOOD), (outside, "OUTSIDE " + GOOD)):  # the same tree inside and outside
        (base / Path(*parts[:-1])).mkdir(parents=True)
        (base / Path(*parts)).write_text(text, encoding="utf-8")
    at = min(swapped, depth)  # the component replaced: a folder on the way, or the file itself

    def swap():
        component = corpus / Path(*parts[: at + 1])
        component.rename(root / "moved")
        component.symlink_to(outside / Path(*parts[: at + 1]))

    with monkeypatch.context() as patch:
        _swap_after_listing(patch, swap)
        articles, warnings = load_articles(corpus)
    assert articles == [] and warnings == [f"skipped {'/'.join(parts)}: became a link or left the folder while "
                                           "being read (not followed)"]


def test_a_hard_link_to_a_file_outside_is_a_file_of_the_folder_and_is_read(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (tmp_path / "elsewhere.txt").write_text(GOOD, encoding="utf-8")
    os.link(tmp_path / "elsewhere.txt", corpus / "a.txt")  # as README.md says: a regular file of the folder
    ids, warnings = _ids_and_warnings(corpus)
    assert ids == ["a.txt"] and warnings == {}

def test_devices_fifos_and_sockets_are_skipped_without_blocking(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(GOOD, encoding="utf-8")
    os.mkfifo(corpus / "pipe.txt")  # opening it for reading would block forever
    (corpus / "zero.txt").symlink_to("/dev/zero")  # outside, and endless
    ids, warnings = _ids_and_warnings(corpus)
    assert ids == ["a.txt"]
    assert "not a regular file" in warnings["pipe.txt"] and "outside" in warnings["zero.txt"]


def test_a_fifo_swapped_in_after_listing_does_not_block_the_read(tmp_path):
    path = tmp_path / "late.txt"
    os.mkfifo(path)
    with pytest.raises(ValueError, match="not a regular file"):
        ingest.read_bounded(path, 1000)


def test_the_size_is_checked_before_reading_and_reads_are_bounded(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    huge = corpus / "huge.txt"
    with open(huge, "wb") as f:  # a sparse 1.5 GB file: reading it whole would cost 1.5 GB of memory
        f.truncate(1_500_000_000)
    (corpus / "a.txt").write_text(GOOD, encoding="utf-8")
    opened = []
    real_open = os.open
    monkeypatch.setattr(ingest.os, "open", lambda path, *a, **kw: opened.append(Path(path).name)
                        or real_open(path, *a, **kw))
    ids, warnings = _ids_and_warnings(corpus)
    assert ids == ["a.txt"] and "larger than 5 MB" in warnings["huge.txt"]
    assert "a.txt" in opened and "huge.txt" not in opened  # the big file was never even opened
    with pytest.raises(ValueError, match="larger than 5 MB"):
        ingest.read_bounded(huge, 5_000_000)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16", "utf-32", "utf-8-sig"])
def test_utf16_and_utf32_are_read_with_or_without_a_bom(tmp_path, encoding):
    (tmp_path / "a.txt").write_bytes(GOOD.encode(encoding))
    [article], warnings = load_articles(tmp_path)
    assert warnings == [] and article.title == "زيارة بوتين إلى الدوحة" and BODY in article.text


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x01\x02\x03" * 100, "binary data"),
        (b"PK\x03\x04" + bytes(range(256)) * 4, "binary data"),
        ("نص".encode() + b"\x00" + "نص".encode(), "binary data (NUL bytes)"),
        ("زيارة\x01\x02\x03\x04\x05\x06".encode() * 3, "binary data (control characters)"),
        ("زيارة بوتين".encode("utf-16-le")[:-1], "binary data"),  # odd length: not UTF-16
        (b"\xff\xfe" + b"\x00\xd8" * 3, "not valid UTF-16"),  # a lone surrogate
    ],
)
def test_what_is_not_clean_text_is_skipped_with_its_reason(tmp_path, data, reason):
    (tmp_path / "x.txt").write_bytes(data)
    articles, [warning] = load_articles(tmp_path)
    assert articles == [] and reason in warning


def test_a_few_control_characters_are_removed_from_the_text(tmp_path):
    (tmp_path / "a.txt").write_text(GOOD.replace("بوتين", "بو\x1b[31mتين\x07", 1), encoding="utf-8")
    [article], _ = load_articles(tmp_path)
    assert "\x1b" not in article.text and "\x07" not in article.text and "[31m" in article.text


def test_subfolders_are_read_hidden_files_and_index_folders_are_not(tmp_path):
    (tmp_path / "2024" / "03").mkdir(parents=True)
    (tmp_path / "2024" / "03" / "a.txt").write_text(GOOD, encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "b.txt").write_text(GOOD + " ب", encoding="utf-8")
    (tmp_path / ".~lock.c.txt").write_text(GOOD + " ج", encoding="utf-8")
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "rag-index.json").write_text("{}")
    (tmp_path / "index" / "d.txt").write_text(GOOD + " د", encoding="utf-8")
    ids, warnings = _ids_and_warnings(tmp_path)
    assert ids == ["2024/03/a.txt"] and warnings == {}


def test_an_unreadable_file_is_a_warning(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.txt").write_text(GOOD + " ب", encoding="utf-8")

    real_open = ingest.open_inside

    def denied(root_fd, relative):
        if relative.name == "b.txt":
            raise PermissionError(13, "Permission denied", str(relative))
        return real_open(root_fd, relative)

    monkeypatch.setattr(ingest, "open_inside", denied)
    ids, warnings = _ids_and_warnings(tmp_path)
    assert ids == ["a.txt"] and warnings["b.txt"] == "skipped b.txt: Permission denied"


names = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1,
                max_size=40).filter(lambda n: n not in (".", ".."))


@given(files=st.dictionaries(names, st.binary(max_size=300), max_size=6), links=st.lists(names, max_size=3))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_folder_of_any_files_loads_or_warns_and_reads_nothing_outside(tmp_path_factory, files, links):
    root = tmp_path_factory.mktemp("fuzz")
    corpus = root / "corpus"
    corpus.mkdir()
    outside = root / "outside.txt"
    outside.write_text("OUTSIDE " + GOOD, encoding="utf-8")
    for name, data in files.items():
        with contextlib.suppress(OSError):  # a name this file system refuses
            (corpus / (name + ".txt")).write_bytes(data)
    for name in links:
        with contextlib.suppress(OSError):
            (corpus / (name + ".md")).symlink_to(outside)
    articles, warnings = load_articles(corpus)
    assert all("OUTSIDE" not in a.text for a in articles)
    assert len(articles) + len(warnings) <= len(files) + len(links)
    for article in articles:
        assert article.text and not ingest._CONTROL.search(article.text)
