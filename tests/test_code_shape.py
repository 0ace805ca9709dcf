"""The shape rules of ARCHITECTURE.md / issue 12 that a scan can check: no function over ~60
lines without a reason in its docstring (a paragraph starting "One piece" or "Long:", e.g.
"One piece (~75 lines): up, down and to share the history check ...").

`python tests/test_code_shape.py` lists the long functions with their length and reason."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "db_tool"
LIMIT = 60
REASONS = ("One piece", "Long:")
REASON = REASONS[-1]


def long_functions(root: Path = SRC, limit: int = LIMIT) -> list[tuple[str, int, str | None]]:
    """(module:line name, length in lines, the reason or None) of every function (methods and
    nested ones too) longer than limit lines, decorators and docstring included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > limit:
                    doc = ast.get_docstring(node) or ""
                    reason = next((p.strip() for p in doc.split("\n\n")
                                   if p.strip().startswith(REASONS)), None)
                    where = f"{path.relative_to(root)}:{node.lineno} {node.name}"
                    found.append((where, length, reason))
    return found


def test_no_long_function_without_a_reason() -> None:
    missing = [f"{where} ({length} lines)" for where, length, reason in long_functions()
               if reason is None]
    assert missing == [], "split these or say why in a 'One piece (~N lines): ...' paragraph"


def test_the_scan_sees_length_and_reason(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT))
    (tmp_path / "m.py").write_text(
        f"def short():\n    pass\n\n\ndef long_one():\n{body}\n\n"
        f"def explained():\n    '''Does it.\n\n    {REASON} one table.'''\n{body}")
    assert long_functions(tmp_path) == [("m.py:5 long_one", LIMIT + 1, None),
                                        (f"m.py:{LIMIT + 8} explained", LIMIT + 4,
                                         f"{REASON} one table.")]


if __name__ == "__main__":
    for where, length, reason in long_functions():
        print(f"{length:4d}  {where}  {reason or '-- NO REASON --'}", file=sys.stdout)
