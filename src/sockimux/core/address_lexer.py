"""socat's lexical rules for addresses, and their inverse.

socat reads an address such as ``EXEC:'ssh host socat STDIO UNIX-CONNECT\\:/tmp/s',count=4``
with one small scanner (``nestlex()`` in socat's nestlex.c), called once per
token with the strings that end that token: ``:`` ``,`` ``!!`` for the type
keyword and the parameters, ``,`` ``=`` ``!!`` for an option's name, ``,``
``!!`` for its value, and a single space when EXEC splits its command line
into words.  :func:`scan` is that scanner; the rules, checked against socat
1.7.4 itself, are:

* ``\\`` takes the next character literally (so ``\\:`` is a colon that
  does not split), except the C escapes ``\\n \\t \\r \\a \\b \\f \\v \\0``;
  this holds inside quotes and brackets too;
* ``'...'`` quotes hard: nothing but ``\\`` and the closing ``'`` is special
  inside;
* ``"..."`` quotes softly: the end strings are not special inside, but
  quotes, brackets and ``\\`` still are;
* ``(...)``, ``[...]``, ``{...}`` nest: the end strings are not special
  inside, and unlike quotes the brackets stay in the token (this is how
  ``TCP:[::1]:22`` keeps its IPv6 colons);
* only the outermost quotes of a token are removed; quotes inside brackets or
  other quotes stay, for the next reader (EXEC's word split) to remove.

Where socat reads past the end of the string (an unclosed quote or bracket)
or silently drops a trailing ``\\``, we raise :class:`AddressError` instead.

:func:`quote` goes the other way: a lexeme that :func:`scan` reads back as
the given text whatever the end strings, bare when nothing in it is special.
"""

from __future__ import annotations

from .errors import AddressError

_NESTS = {"(": ")", "[": "]", "{": "}"}
_C_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
# Characters that make quote() quote: every end string socat uses, the
# quoting and nesting openers, the escape, and whitespace (EXEC splits words
# on spaces, and quoted commands read better in logs).
_SPECIAL = frozenset(":,=!'\"([{\\")
_MAX_DEPTH = 32  # brackets and quotes nested deeper than this are refused, not recursed into


def scan(text: str, pos: int, ends: tuple[str, ...]) -> tuple[str, int]:
    """Read one token of ``text`` from ``pos``; return it and where it stopped.

    The token ends at the first of ``ends`` that is not escaped, quoted or
    inside brackets (the end string is not consumed: the returned position
    points at it), or at the end of ``text``.
    """
    return _scan(text, pos, ends, quotes=True, nests=True, drop=True, depth=0)


def _scan(text: str, pos: int, ends: tuple[str, ...], *, quotes: bool, nests: bool,
          drop: bool, depth: int) -> tuple[str, int]:
    if depth > _MAX_DEPTH:
        raise AddressError(f"quotes or brackets nested more than {_MAX_DEPTH} deep")
    out: list[str] = []
    n = len(text)
    while pos < n:
        if text.startswith(ends, pos):
            return "".join(out), pos
        c = text[pos]
        if quotes and c in "'\"":
            hard = c == "'"
            inner, pos = _scan(text, pos + 1, (c,), quotes=not hard, nests=not hard,
                               drop=False, depth=depth + 1)
            if pos >= n:
                raise AddressError(f"unclosed {c} quote")
            out.append(inner if drop else c + inner + c)
            pos += 1
        elif nests and c in _NESTS:
            close = _NESTS[c]
            inner, pos = _scan(text, pos + 1, (close,), quotes=True, nests=True,
                               drop=False, depth=depth + 1)
            if pos >= n:
                raise AddressError(f"unclosed {c} (no {close})")
            out.append(c + inner + close)
            pos += 1
        elif c == "\\":
            if pos + 1 >= n:
                raise AddressError("ends with a lone backslash")
            following = text[pos + 1]
            out.append(_C_ESCAPES.get(following, following))
            pos += 2
        else:
            out.append(c)
            pos += 1
    return "".join(out), pos


def quote(value: str) -> str:
    """A lexeme :func:`scan` reads back as exactly ``value``.

    Plain text stays bare (``/tmp/sockB``, ``127.0.0.1``); anything else is
    put in single quotes with ``\\`` and ``'`` escaped, the form socat's
    own documentation uses (``EXEC:'ssh host ...'``).  Newlines, tabs and
    the other characters with a C escape are written as that escape, so a
    canonical address fits on one log line.
    """
    if value and not any(c in _SPECIAL or c.isspace() or not c.isprintable() for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    for letter, char in _C_ESCAPES.items():
        if letter != "0":  # a NUL is never in a valid address
            escaped = escaped.replace(char, "\\" + letter)
    return "'" + escaped + "'"


def split_words(command: str) -> tuple[str, ...]:
    """Split an EXEC command line into argv words, as socat's EXEC does.

    Words are separated by spaces (not tabs), read with :func:`scan`: so
    ``'two words'`` is one word, ``\\`` escapes, and brackets stay.  Spaces
    at either end make no empty word (socat would pass one); a quoted empty
    word (``''``) is kept.
    """
    words: list[str] = []
    n = len(command)
    pos = 0
    while pos < n and command[pos] == " ":
        pos += 1
    while pos < n:
        word, pos = scan(command, pos, (" ",))
        words.append(word)
        while pos < n and command[pos] == " ":
            pos += 1
    return tuple(words)


def join_words(argv: tuple[str, ...] | list[str]) -> str:
    """The EXEC command line whose :func:`split_words` is ``argv``."""
    return " ".join(quote(word) for word in argv)
