"""SafeEval: arithmetic expressions evaluated from an AST whitelist, never Python's eval.

Used by the GSM-Symbolic templates (gsm.py: #init, #conditions and #answer lines) and by
executed labels (minisir.labels: bare expressions such as "47 + 38"). Numbers stay exact
(ints and Fractions), and format_number writes a value the way an answer is written.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from fractions import Fraction
from typing import Any, Callable


class TemplateError(ValueError):
    """A template uses something the safe evaluator does not support (it is skipped)."""


_BINOPS: dict[type, Callable] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_CMPOPS: dict[type, Callable] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_NUMBER = (int, float, Fraction)
_MAX_MAGNITUDE = 10**30  # no template needs more; stops runaway powers/products


def _is_num(x: Any) -> bool:
    return isinstance(x, _NUMBER)  # bool is an int: True + 1 is allowed, as in Python


def _div(a: Any, b: Any) -> Any:
    if b == 0:
        raise TemplateError("division by zero")
    if isinstance(a, float) or isinstance(b, float):
        return a / b
    return Fraction(a) / Fraction(b)  # exact: is_int() checks must not suffer float error


def _pow(a: Any, b: Any) -> Any:
    if not isinstance(b, int) or abs(b) > 64 or abs(a) > 10**6:
        raise TemplateError("power too large")
    return Fraction(a) ** b if b < 0 and not isinstance(a, float) else a**b


def _as_value(raw: Any) -> Any:
    """Numeric value of a sampled item: '12' -> 12, '0.25' -> 1/4, '1/3' -> 1/3 (exact)."""
    if isinstance(raw, float):
        return Fraction(str(raw))
    if isinstance(raw, str):
        s = raw.strip()
        if re.fullmatch(r"-?\d+", s):
            return int(s)
        if re.fullmatch(r"-?\d+\.\d+", s):
            return Fraction(s)
        if re.fullmatch(r"-?\d+/\d+", s) and not s.endswith("/0"):
            return Fraction(s)
    if isinstance(raw, (list, tuple)):
        return type(raw)(_as_value(x) for x in raw)
    return raw


def _is_int(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    if isinstance(x, Fraction):
        return x.denominator == 1
    if isinstance(x, float):
        return abs(x - round(x)) < 1e-9
    return False


def _ensure_int(x: Any) -> int:
    if not _is_int(x):
        raise TemplateError(f"{x} is not an integer")
    return int(round(x))


def _divides(a: Any, b: Any) -> bool:
    return b != 0 and a % b == 0


def _to_fraction(x: Any) -> Fraction:
    return Fraction(x).limit_denominator(10**6) if isinstance(x, float) else Fraction(x)


def _places(x: Fraction) -> int:
    """Decimal places needed to write x exactly (0.25 -> 2); capped for non-terminating x."""
    for d in range(7):
        if (x * 10**d).denominator == 1:
            return d
    return 6


def _fmt_decimal(value: Fraction, places: int) -> str:
    text = f"{float(value):.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class SafeEval:
    """Evaluate one template expression from an AST whitelist; never Python's eval.

    Allowed: numbers, strings, names bound in `env`, list/tuple displays, + - * / // % **
    on numbers, unary - + not, comparisons (chained), and/or, x if c else y, and calls of
    the fixed function table by name. Anything else raises TemplateError.
    """

    def __init__(self, env: dict[str, Any], funcs: dict[str, Callable]):
        self.env = env
        self.funcs = funcs

    def __call__(self, source: str) -> Any:
        try:
            node = ast.parse(source.strip(), mode="eval").body
        except SyntaxError as exc:
            raise TemplateError(f"syntax: {source!r}") from exc
        return self.eval(node)

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float, str, bool)):
                return Fraction(str(node.value)) if isinstance(node.value, float) else node.value
            raise TemplateError(f"constant {node.value!r}")
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            raise TemplateError(f"unknown name {node.id}")
        if isinstance(node, (ast.List, ast.Tuple)):
            vals = [self.eval(e) for e in node.elts]
            return vals if isinstance(node, ast.List) else tuple(vals)
        if isinstance(node, ast.BinOp):
            a, b = self.eval(node.left), self.eval(node.right)
            if not (_is_num(a) and _is_num(b)):
                raise TemplateError("arithmetic on non-numbers")
            if isinstance(node.op, ast.Div):
                out = _div(a, b)
            elif isinstance(node.op, ast.Pow):
                out = _pow(a, b)
            elif type(node.op) in _BINOPS:
                if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and b == 0:
                    raise TemplateError("division by zero")
                out = _BINOPS[type(node.op)](a, b)
            else:
                raise TemplateError(f"operator {type(node.op).__name__}")
            if abs(out) > _MAX_MAGNITUDE:
                raise TemplateError("number too large")
            return out
        if isinstance(node, ast.UnaryOp):
            v = self.eval(node.operand)
            if isinstance(node.op, ast.Not):
                return not v
            if not _is_num(v):
                raise TemplateError("sign of a non-number")
            if isinstance(node.op, ast.USub):
                return -v
            if isinstance(node.op, ast.UAdd):
                return +v
            raise TemplateError(f"operator {type(node.op).__name__}")
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, comp in zip(node.ops, node.comparators):
                if type(op) not in _CMPOPS:
                    raise TemplateError(f"comparison {type(op).__name__}")
                right = self.eval(comp)
                try:
                    ok = _CMPOPS[type(op)](left, right)
                except TypeError as exc:
                    raise TemplateError(str(exc)) from exc
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(self.eval(v) for v in node.values)
            return any(self.eval(v) for v in node.values)
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in self.funcs or node.keywords:
                raise TemplateError(f"call {ast.dump(node.func)[:40]}")
            args = [self.eval(a) for a in node.args]
            try:
                return self.funcs[node.func.id](*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, ZeroDivisionError, IndexError, OverflowError) as exc:
                raise TemplateError(f"{node.func.id}: {exc}") from exc
        raise TemplateError(f"unsupported syntax {type(node).__name__}")


def format_number(value: Any) -> str:
    """Answer value as text: integers plain, terminating decimals as decimals, else a/b."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise TemplateError(f"answer {value!r} is not a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TemplateError("answer is not finite")
        value = Fraction(value).limit_denominator(10**6)
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:
        return _fmt_decimal(value, 12)
    return f"{value.numerator}/{value.denominator}"
