"""Answer extraction and equivalence for majority voting.

There is no ground truth in self-play: the majority answer of G student samples is
the pseudo label, so two answers that mean the same number must land in the same
class (1/2, 0.5, \\frac{1}{2}). A fast exact path handles plain numbers; math-verify
(sympy) handles the rest. Nothing here may raise on model output: a crash would
kill a training step over one odd string.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from fractions import Fraction

log = logging.getLogger(__name__)

# Model output can be huge (a runaway generation); answers longer than this are not
# worth sympy's time and are compared as normalised strings only.
MAX_VERIFY_CHARS = 200
# math-verify's own per-call timeouts (seconds, signal based: main thread only).
VERIFY_TIMEOUT_S = 2

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str) -> str | None:
    """Return the content of the LAST \\boxed{...} (or \\fbox{...}), braces balanced.

    The last box is the final answer. If that last box is unterminated (output cut
    off) the answer is None rather than an earlier box: the student never finished.
    Linear time: one regex scan plus one brace walk from the last opening.
    """
    if not text:
        return None
    last = None
    for last in _BOX_RE.finditer(text):
        pass
    if last is None:
        return None
    depth = 1
    i = last.end()
    start = i
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "{}":
            i += 2  # escaped brace: literal, does not count
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                content = text[start:i].strip()
                return content or None
        i += 1
    return None


_UNIT_WORDS = (
    "dollars?|cents?|euros?|pounds?|usd|cm|mm|km|m|meters?|metres?|centimeters?|"
    "centimetres?|kilometers?|kilometres?|inches|inch|in|feet|foot|ft|yards?|yd|miles?|mi|"
    "kg|g|grams?|kilograms?|lbs?|ounces?|oz|liters?|litres?|l|ml|gallons?|"
    "hours?|hrs?|h|minutes?|mins?|seconds?|secs?|s|days?|weeks?|months?|years?|"
    "degrees?|units?|sq|square|cubic|mph|km/h|percent|points?|people|students?|apples?|"
    "items?|pieces?|times|ways|marbles?|books?|cookies?|eggs?|pages?|toys?|cups?|boxes?"
)
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?"
_TRAILING_UNIT_RE = re.compile(rf"^({_NUM})\s*(?:(?:{_UNIT_WORDS})\b\.?\s*)+(?:\^?[23])?$", re.I)
_TRAILING_WORDS_RE = re.compile(rf"^({_NUM})\s+[A-Za-z]{{2,}}[A-Za-z \-]*$")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_THOUSANDS_RE = re.compile(r"^([-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?)(?=\s|$|[A-Za-z])")
_ASSIGN_RE = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?!=)(.+)$")


def normalize_answer(ans: str) -> str:
    """Canonical string form of an answer, so trivially equal answers compare equal.

    Drops $, \\text{...} unit words, degree signs, % , \\left/\\right, spacing macros,
    thousands separators, a trailing period and a leading "x =". Percent is dropped
    (GSM-style: "50%" means the number 50). Idempotent.
    """
    if ans is None:
        return ""
    s = str(ans)[:10_000]
    for _ in range(8):  # to a fixed point: dropping spaces can expose a rule ("A=0\n0" -> "A=00" -> "00")
        once = _normalize_once(s)
        if once == s:
            break
        s = once
    return s


def _normalize_once(s: str) -> str:
    """One pass of `normalize_answer`'s rules, in order."""
    s = s.strip()
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\left", "").replace("\\right", "")
    for sp in ("\\!", "\\,", "\\;", "\\:", "\\ ", "~", "\\quad", "\\qquad"):
        s = s.replace(sp, " ")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)
    s = s.replace("°", "").replace("\\degree", "")
    s = s.replace("\\%", "").replace("%", "")
    # Unwrap \text{..}; what is left after a number is a unit and goes below.
    s = _TEXT_CMD_RE.sub(lambda m: " " + m.group(1).strip() + " ", s)
    s = s.strip().rstrip(".").strip()
    m = _ASSIGN_RE.match(s)
    if m and "=" not in m.group(1):
        s = m.group(1).strip()
    m = _THOUSANDS_RE.match(s)
    if m:  # "1,000 dollars": only a leading, well-formed group, never a tuple like (1,2)
        s = m.group(1).replace(",", "") + s[m.end():]
    m = _TRAILING_UNIT_RE.match(s) or _TRAILING_WORDS_RE.match(s)
    if m:
        s = m.group(1)
    s = s.rstrip(".").strip()
    s = re.sub(r"\s+", "", s)
    if re.fullmatch(r"[A-Za-z]+", s):
        s = s.lower()
    return s


_FRAC_RE = re.compile(r"^([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}$")
_PLAIN_NUM_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")
_SLASH_RE = re.compile(r"^([-+]?\d+)/(\d+)$")
# Exponents beyond this are not built: Fraction("1e10000000") takes seconds and "1e99999999999" never
# returns. No answer a reward checks needs 10^400; such an answer matches only its own spelling.
MAX_EXPONENT = 400


_TOWER_RE = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\(?\s*-?\d+\s*\)?\s*\^|\*\*[^*]*\*\*")
_POWER_RE = re.compile(r"(?:\^|\*\*)\s*[{(]?\s*-?(\d+)")
_FACTORIAL_RE = re.compile(r"(\d+)\s*!")
MAX_FACTORIAL = 1000


def _costly(s: str) -> bool:
    """An expression sympy could spend minutes (or all memory) building: a power tower, a power
    with an exponent over MAX_EXPONENT, or a factorial over MAX_FACTORIAL. Such answers are never
    compared ("9^{9^{9^{9}}}" took 4.5 s against "1" under math-verify's timeouts, and has no
    timeout outside the main thread)."""
    if _TOWER_RE.search(s):
        return True
    if any(len(e) > 6 or int(e) > MAX_EXPONENT for e in _POWER_RE.findall(s)):
        return True
    return any(len(n) > 6 or int(n) > MAX_FACTORIAL for n in _FACTORIAL_RE.findall(s))


def _huge_exponent(s: str) -> bool:
    """A plain number written with an exponent too large (or small) to build exactly."""
    _, e, exp = s.lower().partition("e")
    return bool(e) and (len(exp.lstrip("+-")) > 6 or abs(int(exp)) > MAX_EXPONENT)


def _as_number(s: str) -> Fraction | None:
    """Exact value of a plain numeric answer, None for anything symbolic (or too large to build)."""
    try:
        if _PLAIN_NUM_RE.match(s):
            if len(s) > 60 or _huge_exponent(s):
                return None
            return Fraction(s)
        m = _SLASH_RE.match(s)
        if m and int(m.group(2)) != 0:
            return Fraction(int(m.group(1)), int(m.group(2)))
        m = _FRAC_RE.match(s)
        if m and int(m.group(3)) != 0:
            v = Fraction(int(m.group(2)), int(m.group(3)))
            return -v if m.group(1) == "-" else v
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@functools.lru_cache(maxsize=4096)
def _mv_parse(s: str, timed: bool):
    from math_verify import parse  # imported lazily: sympy import is slow

    timeout = VERIFY_TIMEOUT_S if timed else None
    return parse("\\boxed{" + s + "}", parsing_timeout=timeout, raise_on_error=False)


def _math_verify_equal(a: str, b: str) -> bool:
    from math_verify import verify

    # signal.alarm timeouts only work in the main thread; elsewhere run untimed
    # (inputs are length-capped so sympy work stays small).
    timed = _in_main_thread()
    pa, pb = _mv_parse(a, timed), _mv_parse(b, timed)
    if not pa or not pb:
        return False
    timeout = VERIFY_TIMEOUT_S if timed else None
    return bool(
        verify(pa, pb, timeout_seconds=timeout, raise_on_error=False)
        or verify(pb, pa, timeout_seconds=timeout, raise_on_error=False)
    )


@functools.lru_cache(maxsize=16384)
def _equivalent_norm(a: str, b: str) -> bool:
    if not a or not b:
        return False  # an empty answer is no answer, even against another empty one
    if a == b:
        return True
    na, nb = _as_number(a), _as_number(b)
    if na is not None and nb is not None:
        return na == nb
    if len(a) > MAX_VERIFY_CHARS or len(b) > MAX_VERIFY_CHARS:
        return False
    if any(_PLAIN_NUM_RE.match(x) and _huge_exponent(x) for x in (a, b)) or _costly(a) or _costly(b):
        return False  # too large to build: sympy would build it too
    try:
        return _math_verify_equal(a, b)
    except Exception as exc:  # noqa: BLE001 - model output must never crash a step
        log.debug("math-verify failed on %r vs %r: %s", a, b, exc)
        return False


def equivalent(a: str | None, b: str | None) -> bool:
    """True when two answers denote the same value. Never raises; None never matches."""
    if a is None or b is None:
        return False
    try:
        na, nb = normalize_answer(a), normalize_answer(b)
    except Exception:  # noqa: BLE001
        return False
    if na > nb:  # symmetric cache key
        na, nb = nb, na
    return _equivalent_norm(na, nb)


def _is_final_number(s: str) -> bool:
    """A normalised answer that states a value, not a sum still to be done: a plain number, or a
    fraction in lowest terms ("3/4", "\\frac{3}{4}"; "60/12" is 60 / 12 restated, not 5)."""
    if _as_number(s) is None:
        return False
    m = _SLASH_RE.match(s)
    num_den = (m.group(1), m.group(2)) if m else None
    m = _FRAC_RE.match(s)
    num_den = (m.group(2), m.group(3)) if m else num_den
    if num_den is None:
        return True
    num, den = abs(int(num_den[0])), abs(int(num_den[1]))
    return den > 1 and math.gcd(num, den) == 1


_ARITH_TOKEN_RE = re.compile(r"\\[dt]?frac|\\sqrt|\\times|\\cdot|\\div|\\left|\\right|\d+(?:\.\d+)?|"
                             r"[-+*/×÷·^!()\[\]{}]")
_ARITH_OP_RE = re.compile(r"[+*/×÷·^!]|\\times|\\cdot|\\div|\\[dt]?frac|\\sqrt|(?<=[\d)}])-")
_SQRT_ARG_RE = re.compile(r"\\sqrt\{([^{}]*)\}")
_ROOT_EXPONENT_RE = re.compile(r"\^\s*\{[^{}]*(?:/|\\[dt]?frac)|\^\s*\(?\s*\d+\s*/")


MAX_RESTATED_CHARS = 2000  # longer answers are not read as sums (and no real answer is this long)


def is_unevaluated(answer: str | None) -> bool:
    """Whether an answer is a sum still to be done ("27*8", "69 + 37", "60/12", "\\frac{60}{12}",
    "2^{10}+5", "5!", "\\sqrt{16}", "{69+37}"): numbers and arithmetic only, not itself a final number.

    Such an answer restates its question, whatever it evaluates to. Symbolic answers ("x+1",
    "2\\sqrt{3}") are not sums of this kind, so algebra topics are untouched. Never raises."""
    if answer is None:
        return False
    try:
        return _is_unevaluated_norm(normalize_answer(answer))
    except Exception:  # noqa: BLE001 - model output must never crash a step
        return False


def _is_unevaluated_norm(s: str) -> bool:
    """`is_unevaluated` of an answer already normalised (the vote has done it once).

    Numbers with operators, powers, factorials, braces and \\frac of sums all restate a value. A
    root is an exact final form ("2\\sqrt{3}") unless it is one of a perfect square or of a sum
    ("\\sqrt{16}", "\\sqrt{9+7}"); so is a fractional power ("2^{1/2}").
    """
    if not s or len(s) > MAX_RESTATED_CHARS or _is_final_number(s) or not _ARITH_OP_RE.search(s):
        return False
    if _ARITH_TOKEN_RE.sub("", s) != "" or not any(c.isdigit() for c in s):
        return False
    if _ROOT_EXPONENT_RE.search(s):
        return False
    if "\\sqrt" in s:
        args = _SQRT_ARG_RE.findall(s)
        return any(not a.strip().isdigit() or math.isqrt(int(a)) ** 2 == int(a) for a in args)
    return True


def matches(answer: str | None, reference: str | None) -> bool:
    """Whether `answer` gives `reference`'s value as a final answer: the check behind every reward,
    label audit and score against a known or executed answer.

    Equivalence alone is not enough: math-verify evaluates "69 + 37" to 106, so a policy that boxes
    the question's own expression would be paid for every arithmetic question (a 270M learnt exactly
    that in 20 steps). When the reference is a number, the answer must be a number too. Never raises.
    """
    if not equivalent(answer, reference):
        return False
    try:
        if _as_number(normalize_answer(reference)) is None:
            return True  # a symbolic reference (algebra): equivalence is the check
        return _is_final_number(normalize_answer(answer))
    except Exception:  # noqa: BLE001 - model output must never crash a step
        return False


@dataclass
class Vote:
    """Outcome of a majority vote over G student answers."""

    answer: str | None  # normalised representative of the winning class
    count: int  # members of the winning class
    n_parsed: int  # answers that were extracted (not None / not empty)
    n_total: int
    solve_rate: float  # count / n_total: unparsed samples count as not solving (0 when there are none)
    agrees: list[bool] = field(default_factory=list)  # per input answer
    tie: bool = False  # another class has as many members as the winner: the label is a coin flip


def majority_vote(answers: list[str | None]) -> Vote:
    """Group answers into equivalence classes and return the largest (earliest on ties).

    Unparsed answers (None/empty) never form a class and never agree, and neither do sums still
    to be done ("27 * 8", see `is_unevaluated`): equivalence would group "27 * 8" with "216", so a
    policy that restates its question could form a consensus and be paid for it. Each answer joins
    the first class whose representative it is equivalent to.
    """
    reps: list[str] = []
    counts: list[int] = []
    member: list[int | None] = []
    n_parsed = 0
    for raw in answers:
        norm = normalize_answer(raw) if raw is not None else ""
        if not norm or _is_unevaluated_norm(norm):
            member.append(None)
            continue
        n_parsed += 1
        for idx, rep in enumerate(reps):
            if equivalent(norm, rep):
                counts[idx] += 1
                member.append(idx)
                break
        else:
            reps.append(norm)
            counts.append(1)
            member.append(len(reps) - 1)
    if not reps:
        return Vote(None, 0, 0, len(answers), 0.0, [False] * len(answers))
    best = max(range(len(reps)), key=lambda i: (counts[i], -i))
    return Vote(
        answer=reps[best],
        count=counts[best],
        n_parsed=n_parsed,
        n_total=len(answers),
        solve_rate=counts[best] / len(answers),
        agrees=[m == best for m in member],
        tie=counts.count(counts[best]) > 1,
    )
