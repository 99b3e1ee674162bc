"""How hard a proposed arithmetic problem is, read from its text and its program.

Self-play only beats a fixed dataset if what the proposer writes climbs: more operations,
bigger numbers, words around them. These features make that visible per step (`minisir
report`, "How hard the problems are"), for every method and for archives written before
they existed, since they are computed from what the archive already holds.

- operators: binary arithmetic operations the answer needs. From the program when there is
  one (its AST's +, -, *, /, //, %, ** nodes), else from the problem text.
- digits: the most digits of any whole number in the problem text.
- word: the problem is more than a bare expression ("What is 27 * 8?" is bare).
- program_lines: non-empty lines of the program (0 without one).
- kind: "bare" or "word", then "1-op" or "multi-op" (or "0-op" for none found).

`computation` ranks problems for a curriculum from what an executor verifies only: the
operations and operand sizes of the program (or of a bare problem's own expression). The words
around it are never read there: a proposer that learns which words rank high can write them around
a one-operator sum (RESULTS.md, the first curriculum pilot).
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_TEXT_OP = re.compile(r"(?<=[\d)\s])\s*(?:[+\-*/×÷^]|\\times|\\div|\\cdot)\s*(?=[\d(\\])|(?<=\d)\s*[xX]\s*(?=\d)")
# A question stem a bare expression may start with; what follows it must hold no word.
_STEM = re.compile(r"^\s*(?:what\s+(?:is|are|was|'s)|how\s+much\s+is|compute|calculate|evaluate|find|solve|"
                   r"work\s+out)\b\s*:?", re.IGNORECASE)
_LATEX_OP = re.compile(r"\\(?:times|div|cdot)")
_WORD = re.compile(r"[A-Za-z]{2,}")
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
MAX_TEXT = 4000  # longer texts are cut: a pathological proposal must not stall a report


@dataclass(frozen=True)
class Difficulty:
    operators: int
    digits: int
    word: bool
    program_lines: int

    @property
    def kind(self) -> str:
        ops = "0-op" if self.operators == 0 else "1-op" if self.operators == 1 else "multi-op"
        return f"{'word' if self.word else 'bare'} {ops}"

    def as_dict(self) -> dict:
        return {**asdict(self), "kind": self.kind}


def _is_identity(node: ast.BinOp) -> bool:
    """x + 0, 0 + x, x - 0, x * 1, 1 * x, x * 0, x / 1, x // 1, x ** 1: an operation that computes nothing.
    A proposer ranked by operations pads its sums with them (RESULTS.md, third sitting)."""
    def const(side: ast.AST, value: int) -> bool:
        return isinstance(side, ast.Constant) and type(side.value) in (int, float) and side.value == value

    op, left, right = node.op, node.left, node.right
    if isinstance(op, ast.Add):
        return const(left, 0) or const(right, 0)
    if isinstance(op, ast.Sub):
        return const(right, 0)
    if isinstance(op, ast.Mult):
        return const(left, 1) or const(right, 1) or const(left, 0) or const(right, 0)
    return isinstance(op, (ast.Div, ast.FloorDiv, ast.Pow)) and const(right, 1)


def _program_operators(program: str) -> int | None:
    """Arithmetic operations in a program's AST that compute something (identities such as x + 0
    do not count); None when it does not parse."""
    try:
        tree = ast.parse(program[:MAX_TEXT])
    except (SyntaxError, ValueError):
        return None
    return sum(isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS) and not _is_identity(node)
               for node in ast.walk(tree))


def _operand_digits(program: str) -> int:
    """Digits of the integer part of the largest numeric constant a program writes (0 for none)."""
    from .labels import program_constants

    values = program_constants(program[:MAX_TEXT]) or set()
    return max((len(str(int(v))) for v in values if v < 10**18), default=0)


def computation(problem: str, program: str | None = None) -> tuple[int, int]:
    """(operations, largest operand's digits) of the computation that labels a problem.

    The program when there is one, else the problem's own bare expression; (0, 0) for neither.
    """
    from .labels import bare_expression

    code = program if program and program.strip() else bare_expression(problem or "")
    if not code:
        return 0, 0
    return _program_operators(code) or 0, _operand_digits(code)


def difficulty(problem: str, program: str | None = None) -> Difficulty:
    """The features of one problem (see the module docstring)."""
    text = (problem or "")[:MAX_TEXT]
    ops = _program_operators(program) if program else None
    if ops is None:
        ops = len(_TEXT_OP.findall(text))
    digits = max((len(n.split(".")[0]) for n in _NUMBER.findall(text)), default=0)
    lines = sum(1 for line in (program or "").splitlines() if line.strip())
    rest = _LATEX_OP.sub(" ", _STEM.sub("", text, count=1))
    return Difficulty(operators=ops, digits=digits, word=bool(_WORD.search(rest)), program_lines=lines)
