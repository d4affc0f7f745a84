"""Text from candidates, agents and stored records, made safe to print on a terminal or write into a TSV field.

Descriptions, run output, failure reasons, tracebacks and anything read back from a record (which whoever
can write the results folder can edit) may carry characters a terminal obeys instead of showing: ANSI/VT
escape sequences (clear the screen, set the window title, move the cursor and overwrite earlier lines),
carriage returns and backspaces that rewrite a line, and Unicode bidi overrides and isolates that show text
in another order than it is stored (a "discard" that reads "keep"). ``clean_text`` removes all of them, so
what a person reads is what the record holds.

Removed: escape sequences as a whole (CSI ``ESC [ ... final``, OSC ``ESC ] ... BEL|ST``, DCS/SOS/PM/APC
strings, two-byte ``ESC x`` and their 8-bit C1 forms), then every remaining control character (C0, DEL,
C1: Unicode category Cc) and format character (Cf: bidi embeddings, overrides, isolates and marks,
zero-width characters, the BOM, tag characters). Lone surrogates (Cs), which no UTF-8 file can hold,
become U+FFFD. Tabs and line breaks become one space per run (one-line fields: a TSV column, a listing
row); with ``keep_newlines`` line breaks become ``\\n`` instead, for multi-line text such as a traceback.

JSON output (``--json``) keeps the exact strings on purpose: ``json.dumps`` escapes every control and
non-ASCII character (``ensure_ascii``), so a terminal only ever sees ``\\uXXXX`` text, and tools get the
stored value to judge for themselves.
"""

from __future__ import annotations

import re
import unicodedata

# ESC-introduced sequences, longest forms first; their 8-bit C1 introducers too (0x9b CSI, 0x9d OSC, ...).
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: parameters, intermediates, final byte
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC/DCS/SOS/PM/APC
    r"|\x1b[ -/]*[0-~]"  # two-byte and nF sequences (ESC c resets the terminal, ESC 7/8 move the cursor)
)
# Everything Python's str.splitlines() breaks on, plus the tab.
_BREAKS = re.compile(r"[\t\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")
_NEWLINES = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_DROP = frozenset({"Cc", "Cf"})


def clean_text(text: str | None, *, keep_newlines: bool = False) -> str:
    """``text`` without escape sequences, control or format characters; whitespace breaks as one space.

    One line (the default): tabs and line breaks, runs of them included, become a single space.
    ``keep_newlines``: line breaks (``\\r\\n``, a lone ``\\r``, the Unicode ones) become ``\\n`` and tabs
    a space, so each resulting line is safe on its own.
    """
    if not text:
        return ""
    if text.isprintable():  # no control, format or break character at all: the common case
        return text
    text = _ESCAPES.sub("", text)
    if keep_newlines:
        text = "\n".join(_BREAKS.sub(" ", line) for line in _NEWLINES.split(text))
    else:
        text = _BREAKS.sub(" ", text)
    return "".join(_clean_char(c) for c in text)


def _clean_char(c: str) -> str:
    if c == "\n" or c.isprintable():
        return c
    category = unicodedata.category(c)
    if category in _DROP:
        return ""
    return "\ufffd" if category == "Cs" else c
