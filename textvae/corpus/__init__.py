"""Corpus readers: the chinese-poetry npm package and plain one-sentence-per-line text files."""

from textvae.corpus.npm import fetch_tarball, verify_tarball
from textvae.corpus.poems import Corpus, parse
from textvae.corpus.text import parse_text_files

__all__ = ["Corpus", "fetch_tarball", "parse", "parse_text_files", "verify_tarball"]
