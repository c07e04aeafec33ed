"""What reaches a terminal or a log: text cleaned of control characters and direction overrides, whoever wrote it
(the project, or a library logging a PDF's font name)."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings

# Control characters (an escape sequence starts with one) and bidi overrides from an article must never reach the
# terminal: they could rewrite what the user sees. Line breaks and tabs are kept.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: object) -> str:
    """Text made safe to print to a terminal."""
    return _UNSAFE.sub("", str(text))


def clean_logs() -> None:
    """Clean every log record (when it is made, so whatever handler prints it: ours, a library's, the server's) and
    every warning shown, with safe(). Installing it twice changes nothing."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "cleans", False):
        return

    def cleaned_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        # A bad format string is left as it is, for the handler to report as logging does.
        with contextlib.suppress(Exception):
            record.msg, record.args = safe(record.getMessage()), None
        return record

    cleaned_record.cleans = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(cleaned_record)
    show = warnings.formatwarning
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: safe(
        show(message, category, filename, lineno, line))
