"""Generated grade-school arithmetic (easy, medium, hard) and its train/test split.

Every question has its own rng keyed by (level, seed, index), so ids and texts are stable
for any n. A question's split is fixed by its text (question_split): methods.rlvr trains
on the "train" side, `minisir eval` asks the "test" side, and the two never share a question.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Callable

from ..errors import MinisirError
from .questions import Question


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
