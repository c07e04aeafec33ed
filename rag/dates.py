"""The date grammar: Arabic month names (Egyptian, Levantine and Maghrebi), weekdays and years as they are written in
normalized text; the publication dates a line states, the spans of dates in a text, and a date as readers write it."""

from __future__ import annotations

import re

from rag.normalize import normalize

# Normalized (alef/yeh/teh-marbuta folded) month name -> month number.
_MONTHS = {
    "يناير": 1, "كانون الثاني": 1, "جانفي": 1, "فبراير": 2, "شباط": 2, "فيفري": 2,
    "مارس": 3, "اذار": 3, "ابريل": 4, "نيسان": 4, "افريل": 4, "مايو": 5, "ايار": 5, "ماي": 5,
    "يونيو": 6, "حزيران": 6, "جوان": 6, "يوليو": 7, "تموز": 7, "جويليه": 7, "اغسطس": 8, "اب": 8,
    "اوت": 8, "سبتمبر": 9, "ايلول": 9, "اكتوبر": 10, "تشرين الاول": 10, "نوفمبر": 11,
    "تشرين الثاني": 11, "ديسمبر": 12, "كانون الاول": 12,
}
_MONTH_NAMES = ["يناير", "فبراير", "مارس", "أبريل", "مايو", "يونيو", "يوليو", "أغسطس", "سبتمبر", "أكتوبر", "نوفمبر",
                "ديسمبر"]


def _alternatives(names: set[str] | dict[str, int]) -> str:
    """One regex group matching any of names, longest first (so that 'مايو' is never read as 'ماي')."""
    return "(?:" + "|".join(sorted(names, key=len, reverse=True)) + ")"


_MONTH = _alternatives(_MONTHS)
_WEEKDAY = r"(?:السبت|الاحد|الاثنين|الثلاثاء|الاربعاء|الخميس|الجمعه)"

# --- Publication dates: a line of a page, normalized, read as ISO dates -----------------------------------------

_DATE_WORDS = re.compile(
    rf"\b(\d{{1,2}})\s+({_MONTH})(?:\s*/\s*(?:{_MONTH}))?\s*,?\s+(?:عام\s+|سنه\s+)?(\d{{4}})\b"
)
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_DATE_DMY = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_DAY_AND_TIME = (rf"(?:اليوم\s+)?{_WEEKDAY}?"
                 r"(?:\s*,?\s*\d{1,2}:\d{2}(?::\d{2})?\s*(?:صباحا|مساءا|مساء|am|pm|ص|م)?)?")


def find_dates(line: str) -> list[str]:
    """ISO dates written in a line, in the order they appear (Arabic month names or numbers)."""
    norm = normalize(line)
    found: list[tuple[int, str]] = []
    for m in _DATE_WORDS.finditer(norm):
        found.append((m.start(), _iso(m.group(3), _MONTHS[m.group(2)], m.group(1))))
    for m in _DATE_ISO.finditer(norm):
        found.append((m.start(), _iso(m.group(1), m.group(2), m.group(3))))
    for m in _DATE_DMY.finditer(norm):
        found.append((m.start(), _iso(m.group(3), m.group(2), m.group(1))))
    return [iso for _, iso in sorted(found) if iso]


def _iso(year: str, month: int | str, day: str) -> str:
    y, mo, d = int(year), int(month), int(day)
    return f"{y:04d}-{mo:02d}-{d:02d}" if 1 <= mo <= 12 and 1 <= d <= 31 and 1800 < y < 2200 else ""


def is_date_only(line: str) -> bool:
    """True for a line that is nothing but a date (and maybe a weekday and a time): page metadata."""
    rest = _DATE_WORDS.sub(" ", normalize(line))
    rest = re.sub(_DAY_AND_TIME, " ", rest)
    return bool(find_dates(line)) and len(re.findall(r"\w+", rest)) == 0


def arabic_date(iso: str | None) -> str:
    """'2022-10-12' -> '12 أكتوبر 2022' (how the article's readers, and the model, write a date)."""
    if not iso:
        return ""
    year, month, day = (int(part) for part in iso.split("-"))
    return f"{day} {_MONTH_NAMES[month - 1]} {year}"


# --- Date spans: where a text speaks of a date, a day or a time, read in folded text (rag.answer_types.fold) -------

# Here each word of a two-word month counts alone too ("تشرين", "الثاني").
_SPAN_MONTH = _alternatives({*_MONTHS, *(word for name in _MONTHS for word in name.split())})
_DAY_WORDS = (r"(?:الاول|الثاني|الثالث|الرابع|الخامس|السادس|السابع|الثامن|التاسع|العاشر|الحادي عشر|الثاني عشر"
              r"|الثالث عشر|الرابع عشر|الخامس عشر|العشرين|الحادي والعشرين|الثلاثين)")
_YEAR = r"(?:(?:1[89]\d\d|20\d\d)م?|1[34]\d\d ?ه(?!\w))"  # "1911م" (era letter glued on), "1401 هـ" (Hijri)
DATE_SPAN = (
    rf"(?:(?:يوم |يومي )?{_WEEKDAY} )?"
    rf"(?:(?:\d{{1,2}}(?: و ?\d{{1,2}})?|{_DAY_WORDS}(?: من)?) )?"
    rf"(?:شهر )?{_SPAN_MONTH}(?: ?/ ?{_SPAN_MONTH})?(?:،|,)?(?: (?:عام |سنه |العام )?{_YEAR})?"
    rf"|(?:عام|سنه|العام) {_YEAR}|(?<![\d/.-]){_YEAR}(?![\d/.-])"
    r"|\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{4}"
    rf"|(?:يوم |اليوم )?{_WEEKDAY}"
    r"|(?:اوائل|اواخر|منتصف|مطلع|بدايه|نهايه) (?:العام|الشهر|القرن|الثمانينات|التسعينات|السبعينات|الستينات)"
    rf"|(?:قبل|بعد|منذ) (?:اكثر من |نحو |حوالي )?(?:\d+ )?(?:يوم|يومين|ايام|اسبوع|اسبوعين|اسابيع|شهر|شهرين|اشهر"
    r"|عام|عامين|اعوام|سنه|سنتين|سنوات|ساعات|ساعه)"
)
