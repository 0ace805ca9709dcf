"""Where psql ends a statement: the one psql lexer of db-tool. It rewrites a migration so that
psql sends it as ONE query (one_query), finds a file's own transaction control
(transaction_control), and lends its lexer to sqlscript.script_pieces (what psql sends and runs
of a whole script: `database test`'s wrapper check).

`one_query(sql)` follows psql's own lexer (src/fe_utils/psqlscan.l) far enough to find every
`;` that ends a statement, and writes each of them as psql's `\\;` (which puts a `;` into the
query buffer without sending it). The migrator can then send `BEGIN \\; <migration> \\; INSERT
history \\; COMMIT;` as one simple-query message instead of one round trip per statement.

The rewrite is only offered when it is CERTAIN to give the server the same statements in the
same order as `\\i file` would; anything else returns `NotInlinable(reason)` and the caller
keeps `\\i`. Followed like psql: '...' with '', E'...' with backslash escapes, U&'...', B/X'...',
"..." and U&"..." identifiers, $tag$...$tag$ (a tag cannot start with a digit; $1 is a
parameter, and `$` inside an identifier is part of it), -- comments, nested /* */ comments,
parentheses (psql does not end a statement at a `;` inside them), :: casts and psql variables
:name, :'name', :"name", :{?name} (left as they are: psql interpolates them when it reads the
driver, as with `\\i`). Refused:
  - a backslash outside quotes and comments (a psql meta-command), and a backslash inside a
    '...' or N'...' string (psql and the server read it by standard_conforming_strings);
  - any BEGIN word (transaction control, or a BEGIN ATOMIC body, which psql tracks itself);
  - a statement starting with START, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE or
    PREPARE TRANSACTION (the file does its own transaction control), or with COPY (COPY FROM
    STDIN reads the lines after it);
  - SET NAMES, RESET ALL, or any mention of client_encoding, standard_conforming_strings or
    backslash_quote (they change how the rest of a one-message batch is read);
  - an unterminated quote, comment or dollar quote, or a `(` left open at the end;
  - a number glued to a quote, `$` or `"` (psql versions lex `1e$$` differently);
  - a NUL character, more than MAX_CHARS characters, or text psql might decode differently
    (non-ASCII when the caller is not sure of psql's encoding);
  - an unquoted :name whose value the caller cannot vouch for (psql lexes the value again).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from db_tool.record import Frozen

# A migration bigger than this keeps `\i`: the server parses a whole message before running
# it, and one round trip does not matter next to a megabyte of SQL.
MAX_CHARS = 1 << 20

# Character classes of psqlscan.l, written as negations of ASCII (a class reaching up to
# U+10FFFF costs ~10 ms to compile): every non-ASCII character counts as a letter, as psql
# counts every byte >= 0x80.
_LETTER = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # A-Z a-z _ non-ASCII
_LETTER_DIGIT = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # and 0-9
_IDENT_CONT = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # and 0-9 $
_IDENT_START = re.compile(_LETTER)
_IDENT = re.compile(f"{_LETTER}{_IDENT_CONT}*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_DOLLAR_TAG = re.compile(rf"\$(?:{_LETTER}{_LETTER_DIGIT}*)?\$")
_PARAM = re.compile(r"\$[0-9]+")
_VARCHARS = f"{_LETTER_DIGIT}+"
_VAR_QUOTED = re.compile(rf":(?:'{_VARCHARS}'|\"{_VARCHARS}\"|\{{\?{_VARCHARS}\}})")
_VAR = re.compile(rf":({_VARCHARS})")
_SPACE = " \t\n\r\f\v"
_NEWLINE = "\n\r"

# First words of statements that do their own transaction control (BEGIN is refused anywhere).
_TX_CONTROL = {"start", "commit", "end", "rollback", "abort", "savepoint", "release"}
_PARSER_SETTINGS = ("client_encoding", "standard_conforming_strings", "backslash_quote")
# A variable value psql can lex again in the middle of a statement without changing where
# anything ends, even glued to the text around it (no quote, $, ;, parenthesis, backslash,
# colon, or - / * that could start a comment).
_NEUTRAL_VALUE = re.compile(r"[\w .,+=<>!@#%^&|~?{}\[\]]*")
# psql sets all-upper-case variables itself (DBNAME, USER, LAST_ERROR_MESSAGE, ...).
_PSQL_OWNED = re.compile(r"[A-Z][A-Z0-9_]*")


# Frozen (record.py), not dataclasses: sqlsplit is on every `migrate` that has work.
class OneQuery(Frozen):
    """The SQL with every statement-ending `;` written as `\\;` (and a space on each empty
    line outside quotes and comments, which psql would drop)."""

    __slots__ = _fields = ("text", "terminated", "statements")
    text: str
    # False when the last statement has no `;` (psql sends it at the end of the file with `\i`;
    # the caller must put a `\;` after it before its own statements).
    terminated: bool
    statements: int

    def __init__(self, text: str, terminated: bool, statements: int) -> None:
        self._set(text=text, terminated=terminated, statements=statements)


class NotInlinable(Frozen):
    __slots__ = _fields = ("reason",)
    reason: str

    def __init__(self, reason: str) -> None:
        self._set(reason=reason)


def neutral_value(value: str) -> bool:
    """Whether psql may substitute this value for an unquoted :name inside a statement without
    changing how the rest of the text is split (see _NEUTRAL_VALUE)."""
    return _NEUTRAL_VALUE.fullmatch(value) is not None


def one_query(
    sql: str | bytes,
    *,
    variables: Mapping[str, str] | None = None,
    non_ascii: bool = True,
) -> OneQuery | NotInlinable:
    """Rewrite sql for sending as one query, or say why not (then run it with `\\i`).

    variables: psql variables whose values are certain at the point the text is read; an
    unquoted :name must be one of them with a neutral value, else NotInlinable.
    non_ascii: False when the caller cannot be sure psql reads the text as UTF-8 (or another
    encoding in which every ASCII byte is a character of its own).
    """
    if isinstance(sql, bytes):
        try:
            sql = sql.decode("utf-8")
        except UnicodeDecodeError:
            return NotInlinable("not UTF-8")
    if len(sql) > MAX_CHARS:
        return NotInlinable(f"larger than {MAX_CHARS} characters")
    if "\0" in sql:
        return NotInlinable("NUL character")
    if not non_ascii and not sql.isascii():
        return NotInlinable("non-ASCII text and psql's client encoding is not certain")
    lowered = sql.lower()
    for setting in _PARSER_SETTINGS:
        if setting in lowered:
            return NotInlinable(f"mentions {setting}")
    return _Lexer(sql, variables or {}).run()


class _Lexer:
    # What the one-query rewrite refuses; script_pieces() reads any script (strict = False).
    strict = True
    plain_backslash = "refuse"  # a backslash in '...' (psql reads it by the server setting)

    def __init__(self, sql: str, variables: Mapping[str, str]) -> None:
        self.s = sql
        self.variables = variables
        self.ends: list[int] = []  # offsets of statement-ending `;`
        self.blank: list[int] = []  # offsets of the "\n" ending an empty line outside quotes
        self.words: list[str] = []  # the first three words of the current statement
        self.content = False  # something other than space/comments since the last end

    def run(self) -> OneQuery | NotInlinable:
        try:
            self._scan()
        except _Refuse as exc:
            return NotInlinable(str(exc))
        # psql skips empty lines outside quotes: give them a space, so that the server's
        # "LINE n" of an error in the one query is line n of the file.
        edits = sorted([(end, "\\;", 1) for end in self.ends] + [(b, " ", 0) for b in self.blank])
        pieces, last = [], 0
        for at, text, drop in edits:
            pieces += [self.s[last:at], text]
            last = at + drop
        pieces.append(self.s[last:])
        return OneQuery("".join(pieces), not self.content, len(self.ends) + self.content)

    def _scan(self) -> None:
        s, n, i, depth = self.s, len(self.s), 0, 0
        while i < n:
            c = s[i]
            if c in _SPACE:
                if c == "\n" and i and s[i - 1] == "\n":
                    self.blank.append(i)
                i += 1
                continue
            if s.startswith("--", i):
                i = self._comment(i, _until_newline(s, i))
                continue
            if s.startswith("/*", i):
                i = self._comment(i, _comment_end(s, i))
                continue
            self.content = True
            if c == ";":
                if depth == 0:
                    self.ends.append(i)
                    self.words = []
                    self.content = False
                i += 1
            elif c == "(":
                depth += 1
                i += 1
            elif c == ")":
                depth = max(0, depth - 1)
                i += 1
            elif c == "'":
                i = _quoted(s, i, "'", backslash=self.plain_backslash)
            elif c == '"':
                i = _quoted(s, i, '"', backslash="literal")
            elif c == "$":
                i = self._dollar(i)
            elif c == ":":
                i = self._colon(i)
            elif c == "\\":
                i = self._meta(i)
            elif c.isdigit() and c.isascii():
                m = _NUMBER.match(s, i)
                assert m is not None
                i = m.end()
                if self.strict and i < n and (s[i] in "'\"$" or not s[i].isascii()):
                    raise _Refuse("a number glued to a quote or $")
            elif _IDENT_START.match(c):
                i = self._word(i)
            else:
                i += 1
        if depth and self.strict:
            raise _Refuse("unbalanced parentheses")

    def _comment(self, start: int, end: int) -> int:
        """A comment from start to end (where scanning goes on)."""
        return end

    def _meta(self, i: int) -> int:
        raise _Refuse("psql meta-command (backslash outside quotes)")

    def _word(self, i: int) -> int:
        s = self.s
        m = _IDENT.match(s, i)
        assert m is not None
        word, end = m.group().lower(), m.end()
        nxt = s[end : end + 2]
        if word in ("e", "b", "x", "n", "u") and nxt[:1] == "'":
            # E'..' knows backslash escapes; N'..' is a plain string; in B'..' and X'..' a
            # backslash is literal and '' ends the string (the next ' opens a plain one).
            if word in ("b", "x"):
                return _quoted(s, end, "'", backslash="literal", doubled=False)
            return _quoted(s, end, "'",
                           backslash="escape" if word == "e" else self.plain_backslash)
        if word == "u" and nxt in ("&'", '&"'):
            return _quoted(s, end + 1, nxt[1], backslash="literal")
        if word == "begin":
            raise _Refuse("BEGIN (transaction control or a BEGIN ATOMIC body)")
        if len(self.words) < 3:
            self.words.append(word)
            self._check_head()
        return end

    def _check_head(self) -> None:
        words = self.words
        first = words[0]
        if first in _TX_CONTROL:
            raise _Refuse(f"transaction control ({first.upper()})")
        if first == "copy":
            raise _Refuse("COPY (FROM STDIN reads the lines after it)")
        if words[:2] == ["prepare", "transaction"]:
            raise _Refuse("transaction control (PREPARE TRANSACTION)")
        if words[:2] == ["reset", "all"]:
            raise _Refuse("RESET ALL")
        if first == "set" and "names" in words[1:2] + (
            words[2:3] if words[1:2] in (["session"], ["local"]) else []
        ):
            raise _Refuse("SET NAMES")

    def _dollar(self, i: int) -> int:
        s = self.s
        m = _DOLLAR_TAG.match(s, i)
        if m:
            close = s.find(m.group(), m.end())
            if close < 0:
                raise _Refuse(f"unterminated dollar quote {m.group()}")
            return close + len(m.group())
        m = _PARAM.match(s, i)
        return m.end() if m else i + 1

    def _colon(self, i: int) -> int:
        s = self.s
        if s.startswith("::", i):
            return i + 2
        m = _VAR_QUOTED.match(s, i)
        if m:
            return m.end()  # psql substitutes a quoted value (or leaves the text): no re-lexing
        m = _VAR.match(s, i)
        if m:
            name = m.group(1)
            value = self.variables.get(name)
            if self.strict and (value is None or _PSQL_OWNED.fullmatch(name)
                                or not neutral_value(value)):
                raise _Refuse(f"unquoted psql variable :{name} (psql lexes its value again)")
            return m.end()
        return i + 1


class _Refuse(Exception):
    pass


def _until_newline(s: str, i: int) -> int:
    while i < len(s) and s[i] not in _NEWLINE:
        i += 1
    return i


def _comment_end(s: str, i: int) -> int:
    """End of the (nested) /* */ comment starting at i."""
    depth, i = 1, i + 2
    while depth:
        nxt_open, nxt_close = s.find("/*", i), s.find("*/", i)
        if nxt_close < 0:
            raise _Refuse("unterminated /* comment")
        if 0 <= nxt_open < nxt_close:
            depth, i = depth + 1, nxt_open + 2
        else:
            depth, i = depth - 1, nxt_close + 2
    return i


def _quoted(s: str, i: int, quote: str, *, backslash: str, doubled: bool = True) -> int:
    """End of the quoted string/identifier whose opening quote is at i. A doubled quote stays
    inside (when doubled). backslash: "escape" (E'..': it escapes the next character), "literal", or
    "refuse" ('..': its meaning depends on standard_conforming_strings)."""
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == quote:
            if doubled and i + 1 < n and s[i + 1] == quote:
                i += 2
                continue
            return i + 1
        if c == "\\":
            if backslash == "refuse":
                raise _Refuse("backslash in a '...' string (read by standard_conforming_strings)")
            if backslash == "escape":
                i += 2
                continue
        i += 1
    raise _Refuse(f"unterminated {quote}")


# ------------------------------------------------------------------------------ psql's view


def psql_meta_quote(text: str) -> str:
    """Quote one argument of a psql meta-command (\\i, \\ir, \\set) as psql's backslash-
    command lexer reads it back: single quotes, '' for a quote, \\\\ for a backslash, and \\n
    \\r \\t for the control characters that would otherwise end or bend the line."""
    out = text.replace("\\", "\\\\").replace("'", "''")
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{out}'"


# --------------------------------------------------------------------------- transaction control

_META_LINE = re.compile(r"^[ \t]*\\([A-Za-z!?]*)[^\n]*$", re.MULTILINE)
_CONNECT = {"c", "connect"}
_ENDS_TX = re.compile(
    r"^[ \t]*(commit|end|rollback|abort|prepare[ \t]+transaction)\b(?![ \t]+(?:work[ \t]+|"
    r"transaction[ \t]+)?to\b)", re.IGNORECASE | re.MULTILINE,
)
_STARTS = ("BEGIN", "START")
_COMMITS = ("COMMIT", "END")


class TxControl(Frozen):
    """A file's own transaction control (see transaction_control)."""

    __slots__ = _fields = ("ends", "wrapper")
    # COMMIT, END, ROLLBACK, ABORT, PREPARE TRANSACTION and \\c / \\connect, in order.
    ends: tuple[str, ...]
    # The whole file is one BEGIN/START … COMMIT/END block: its first statement opens the
    # transaction, its last commits it, and nothing else ends a transaction.
    wrapper: bool

    def __init__(self, ends: tuple[str, ...] = (), wrapper: bool = False) -> None:
        self._set(ends=ends, wrapper=wrapper)


def transaction_control(sql: str | bytes) -> TxControl:
    """What in sql ends the transaction around it. Best effort (psql's lexer where it can follow
    the text, else line starts), used to word a failure and to run a BEGIN … COMMIT file as its
    own transaction; the migrator's savepoint guard catches what this misses."""
    if isinstance(sql, bytes):
        sql = sql.decode("utf-8", "replace")
    metas: list[tuple[int, str]] = []

    def meta(match: re.Match[str]) -> str:
        if match.group(1) in _CONNECT:
            metas.append((match.start(), "\\" + match.group(1)))
        return " " * len(match.group(0))  # keep offsets; psql reads a meta line by itself

    text = _META_LINE.sub(meta, sql)
    lexer = _TxLexer(text)
    try:
        lexer._scan()
    except _Refuse:
        found = metas + [(m.start(), " ".join(m.group(1).upper().split()))
                         for m in _ENDS_TX.finditer(text)]
        return TxControl(tuple(word for _, word in sorted(found)))
    heads = lexer.heads
    ends = [(at, word) for at, _, word in heads if word not in _STARTS]
    total = len(lexer.ends) + lexer.content
    wrapper = (
        not metas and len(heads) == 2 and heads[0][1:] == (0, heads[0][2])
        and heads[0][2] in _STARTS and heads[1][2] in _COMMITS and heads[1][1] == total - 1
    )
    return TxControl(tuple(word for _, word in sorted(metas + ends)), wrapper)


class _TxLexer(_Lexer):
    """_Lexer recording transaction-control statement heads instead of refusing them."""

    def __init__(self, sql: str) -> None:
        super().__init__(sql, {})
        self.heads: list[tuple[int, int, str]] = []  # (offset, statement ordinal, word)
        self._at = 0
        self._atomic = False  # inside a BEGIN ATOMIC body, whose END is not a statement

    def _word(self, i: int) -> int:
        if not self.words:
            self._at = i
        m = _IDENT.match(self.s, i)
        if m is not None and m.group().lower() == "begin":
            if self.words:  # BEGIN ATOMIC inside CREATE FUNCTION/PROCEDURE
                self._atomic = self._atomic or self.s[m.end():].lstrip()[:6].lower() == "atomic"
                return m.end()
            self.words.append("begin")
            self.heads.append((self._at, len(self.ends), "BEGIN"))
            return m.end()
        return super()._word(i)

    def _check_head(self) -> None:
        words = self.words
        first = words[0]
        if self._atomic:
            if len(words) == 1 and first == "end":
                self._atomic = False
            return
        head = (self._at, len(self.ends))
        if len(words) == 1 and first in ("commit", "end", "abort", "rollback", "start"):
            if first != "start":
                self.heads.append((*head, first.upper()))
        elif words == ["start", "transaction"]:
            self.heads.append((*head, "START"))
        elif first == "rollback" and words[1:] in (["to"], ["work", "to"], ["transaction", "to"]):
            # ROLLBACK [WORK|TRANSACTION] TO a savepoint: the transaction goes on
            if self.heads and self.heads[-1][:2] == head:
                self.heads.pop()
        elif words == ["prepare", "transaction"]:
            self.heads.append((*head, "PREPARE TRANSACTION"))
