"""The article: one source document of the corpus, as every stage (ingest, chunking, stores, evidence) sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Article:
    """One source document: cleaned display text plus metadata."""

    id: str  # the file name
    title: str
    date: str | None  # ISO yyyy-mm-dd when the page states one
    text: str  # cleaned, never normalized: this is what users see and what offsets point into
    sha256: str  # of the raw file bytes
    format: str = "text"  # text, html, pdf or docx
