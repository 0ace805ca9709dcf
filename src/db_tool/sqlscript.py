"""psql's view of a whole script (`database test`'s wrapper check): the statements it sends
and the meta-commands it runs, in order. The lexer is sqlsplit's (the one psql lexer of
db-tool) in a lenient mode: it reads what one_query() would refuse."""

from __future__ import annotations

import re
from dataclasses import dataclass

from db_tool.sqlsplit import _IDENT, _Lexer, _Refuse, _until_newline


@dataclass(frozen=True)
class Piece:
    """One thing psql does with a script: send an SQL statement, or run a meta-command."""

    offset: int  # where it starts in the script
    line: int  # its line (1-based)
    # The statement without its comments and its `;` (stripped), or the meta-command's
    # line from its backslash ("\\i other.sql").
    text: str

    @property
    def meta(self) -> bool:
        return self.text.startswith("\\")


# Meta-commands that send the query buffer (they end the statement before them).
_SENDS = {"g", "gx", "gset", "gexec", "gdesc", "crosstabview", "watch"}


def script_pieces(sql: str) -> list[Piece]:
    """psql's view of a whole script, in order: SQL statements (ended by a `;` outside quotes,
    comments and parentheses, or by a meta-command that sends the buffer: \\g, \\gset, ...)
    and meta-commands (a backslash outside quotes, to the end of its line). The same lexer as
    one_query(), reading what it would refuse (standard_conforming_strings on); an
    unterminated quote or comment runs to the end of the script."""
    import contextlib

    lexer = _ScriptLexer(sql)
    with contextlib.suppress(_Refuse):  # unterminated: the rest belongs to the last statement
        lexer._scan()
    return lexer.pieces()


class _ScriptLexer(_Lexer):
    strict = False
    plain_backslash = "literal"

    def __init__(self, sql: str) -> None:
        super().__init__(sql, {})
        self.skips: list[tuple[int, int, str | None]] = []  # comments and metas: (start, end, meta)

    def _comment(self, start: int, end: int) -> int:
        self.skips.append((start, end, None))
        return end

    def _meta(self, i: int) -> int:
        end = _until_newline(self.s, i)
        text = self.s[i:end].strip()
        self.skips.append((i, end, text))
        name = text[1:].split(None, 1)[0] if len(text) > 1 else ""
        if name in _SENDS and self.content:
            self.ends.append(i)
            self.words = []
            self.content = False
        return end

    def _word(self, i: int) -> int:
        m = _IDENT.match(self.s, i)
        if m is not None and m.group().lower() == "begin":
            return m.end()
        return super()._word(i)

    def _check_head(self) -> None:
        pass

    def pieces(self) -> list[Piece]:
        import bisect

        s = self.s
        newlines = [m.start() for m in re.finditer("\n", s)]

        def piece(at: int, text: str) -> Piece:
            return Piece(at, bisect.bisect_left(newlines, at) + 1, text)

        # (start, kind, end, meta text): kind 0 ends a statement (a `;`, or the start of a
        # meta-command that sends it), 1 is a comment, 2 a meta-command.
        events = sorted([(at, 0, at + (s[at] == ";"), "") for at in self.ends]
                        + [(a, 1 if t is None else 2, b, t or "") for a, b, t in self.skips])
        out: list[Piece] = []
        buf: list[tuple[int, str]] = []  # (offset, text) of the statement being read

        def flush() -> None:
            for offset, text in buf:
                if text.strip():
                    at = offset + len(text) - len(text.lstrip())
                    out.append(piece(at, "".join(t for _, t in buf).strip()))
                    break
            buf.clear()

        last = 0
        for start, kind, end, text in events:
            buf.append((last, s[last:start]))
            if kind == 0:
                flush()
            elif kind == 1:
                buf.append((start, " "))
            else:
                out.append(piece(start, text))
            last = end
        buf.append((last, s[last:]))
        flush()
        return out
