"""harness.sanitize: nothing a terminal obeys survives, ordinary text stays as it is."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sanitize import clean_text

# What an adversarial description or run output line may carry, each with what a person should see.
ATTACKS = [
    ("a\x1b[2Jb", "ab"),  # CSI: clear the screen
    ("a\x1b[1;31mred\x1b[0m", "ared"),  # colours
    ("t\x1b]0;pwned\x07x", "tx"),  # OSC: set the window title (BEL-terminated)
    ("t\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "tlink"),  # OSC 8 hyperlink (ST-terminated)
    ("a\x1bPq#0;2;0;0;0\x1b\\b", "ab"),  # DCS (sixel)
    ("a\x1bcb", "ab"),  # ESC c: full terminal reset
    ("a\x9b2Jb", "ab"),  # 8-bit CSI
    ("discard\rkeep", "discard keep"),  # carriage return overwrites the line
    ("keep\x08\x08\x08\x08drop", "keepdrop"),  # backspaces
    ("x\u202epeek\u202c y", "xpeek y"),  # bidi override: shown reversed
    ("x\u2066a\u2069\u2067b\u2069\u2068c\u2069", "xabc"),  # bidi isolates
    ("x\u200e\u200f\u061cy", "xy"),  # bidi marks
    ("ze\u200bro\ufeff\u2060w", "zerow"),  # zero-width characters, BOM, word joiner
    ("tag\U000e0041\U000e0042", "tag"),  # invisible tag characters
    ("nul\x00del\x7fc1\x85x", "nuldelc1 x"),  # C0, DEL, C1 (NEL is a line break)
    ("a\tb\n\nc\x0b\x0cd\u2028e\u2029f", "a b c d e f"),  # tabs and line breaks: one space per run
    ("bad\udcffsurrogate", "bad\ufffdsurrogate"),  # lone surrogates cannot be written as UTF-8
]


def assert_inert(text: str, newlines: bool = False) -> None:
    bad = [c for c in text if (c != "\n" or not newlines) and unicodedata.category(c) in ("Cc", "Cf", "Cs")]
    assert not bad, [hex(ord(c)) for c in bad]


@pytest.mark.parametrize("dirty, shown", ATTACKS)
def test_attacks_are_removed_and_the_text_kept(dirty, shown):
    assert clean_text(dirty) == shown
    assert_inert(clean_text(dirty))
    assert clean_text(dirty).encode("utf-8")


def test_ordinary_text_is_unchanged():
    for text in ("val_bpb 0.9979 · H100-SXM-80GB·700W", "wider MLP, lr=0.05 (Δ -0.0012)", "é 日本語 🙂 Ωmega",
                 "nbsp\u00a0kept", "  indented"):
        assert clean_text(text) == text
    assert clean_text(None) == "" and clean_text("") == ""


def test_keep_newlines_keeps_lines_and_cleans_each():
    tail = "Traceback:\r\n  File \"train.py\"\r  boom\x1b[2K\n\tValueError\u2028x"
    assert clean_text(tail, keep_newlines=True) == 'Traceback:\n  File "train.py"\n  boom\n ValueError\nx'
    assert_inert(clean_text(tail, keep_newlines=True), newlines=True)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=()), max_size=80),
       st.sampled_from(["", "\x1b[", "\x1b]", "\x9b", "\x1b", "\r\n", "\u202e", "\udc80"]))
def test_any_text_comes_out_inert_one_line_and_stable(text, splice):
    dirty = text[: len(text) // 2] + splice + text[len(text) // 2:]
    once = clean_text(dirty)
    assert_inert(once)
    assert "\n" not in once and "\r" not in once and "\t" not in once
    assert clean_text(once) == once
    once.encode("utf-8")  # never raises: surrogates are gone
    multi = clean_text(dirty, keep_newlines=True)
    assert_inert(multi, newlines=True)
    assert clean_text(multi, keep_newlines=True) == multi
