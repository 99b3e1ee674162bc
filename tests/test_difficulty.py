"""Difficulty features of proposed problems, and the report's panel that shows them climb."""

from __future__ import annotations

import pytest

from minisir.archive import Archive
from minisir.difficulty import MAX_TEXT, computation, difficulty
from minisir.report import write_report


@pytest.mark.parametrize("text, program, kind, operators, digits", [
    ("What is 47 + 38?", None, "bare 1-op", 1, 2),
    ("What is 47 + 38?", "print(47 + 38)", "bare 1-op", 1, 2),
    ("What is (12 + 7) * 3?", None, "bare multi-op", 2, 2),
    ("Compute 120 / 4 - 7.", None, "bare multi-op", 2, 3),
    ("What is 3 \\times 4?", None, "bare 1-op", 1, 1),
    ("What is 8768-7828?", None, "bare 1-op", 1, 4),
    # any question stem: "What are 10 + 1 ?" ranked as a word problem filled the first curriculum pilot
    ("What are 10 + 1 ?", "print(10 + 1)", "bare 1-op", 1, 2),
    ("How much is 6 x 7?", None, "bare 1-op", 1, 1),
    ("What is the product of 36 and 64?", "print(36 * 64)", "word 1-op", 1, 2),
    ("Tom has 35 marbles and gives 12 of them to his sister. How many are left?", "print(35 - 12)", "word 1-op", 1, 2),
    # the program, not the wording, says how many operations the answer takes
    ("A box holds 6 eggs and 4 more are added. How many eggs are in 5 boxes?", "x = (6 + 4) * 5\nprint(x)",
     "word multi-op", 2, 1),
    ("Which number is largest?", None, "word 0-op", 0, 0),
])
def test_features(text, program, kind, operators, digits):
    d = difficulty(text, program)
    assert (d.kind, d.operators, d.digits) == (kind, operators, digits)
    assert d.program_lines == (len([x for x in program.splitlines() if x.strip()]) if program else 0)


def test_a_program_that_does_not_parse_falls_back_to_the_text():
    assert difficulty("What is 9 * 7 - 2?", "print(9 * 7 -").operators == 2


def test_huge_text_is_cut_not_scanned_whole():
    d = difficulty("What is " + "1 + " * 100_000 + "1?")
    assert d.operators <= MAX_TEXT


def _problems(step: int, kinds: list[tuple[str, str | None, float]]) -> list[dict]:
    return [{"key": f"p{i}", "text": t, "program": prog, "role": "proposer", "valid": True, "solve_rate": rate}
            for i, (t, prog, rate) in enumerate(kinds)]


def test_report_shows_the_proposer_moving_to_harder_problems(tmp_path):
    """Early steps write one-operator sums, late ones two-step word problems: the panel's table
    shows the shares move, with each kind's solve rate, and the plot is written."""
    run = tmp_path / "run"
    run.mkdir()
    archive = Archive.open(run)
    archive.ensure_run({"model": {"gguf": "bundled"}, "method": {"name": "sqlm"}}, {"minisir": "0"}, 0)
    easy = [("What is 4 + 5?", "print(4 + 5)", 0.5), ("What is 7 * 8?", "print(7 * 8)", 0.25)]
    hard = [("Ann has 12 apples, buys 30 more and eats 5. How many are left?", "print(12 + 30 - 5)", 0.125),
            ("What is 4 + 5?", "print(4 + 5)", 1.0)]
    for step in range(6):
        archive.commit_step({"step": step}, _problems(step, easy if step < 3 else hard), [])
    archive.close()
    md = write_report(run).read_text()
    section = md.split("## How hard the problems are")[1]
    assert (run / "report" / "difficulty.png").read_bytes()[:4] == b"\x89PNG"
    header = next(line for line in section.splitlines() if line.startswith("| phase"))
    kinds = [c.strip() for c in header.strip("|").split("|")][3:]
    assert kinds == ["bare 1-op", "word multi-op"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| early") or line.startswith("| late")}
    assert rows["early"][3:] == ["1.00 (0.38)", "0.00"]
    assert rows["late"][3:] == ["0.50 (1.00)", "0.50 (0.12)"]


@pytest.mark.parametrize("problem, ops", [
    ("What is 100 + (4 + 13 * 2 + 0)?", 3),  # + 0 computes nothing
    ("What is 000 + 100 + 2 * 1 + 2 * 0?", 2),  # 0 + x, x * 1 and x * 0 neither
    ("What is 3 * 1?", 0),
    ("What is 7 - 0 + 5 / 1?", 1),
    ("What is 0 - 7?", 1),  # negation is a computation
    ("What is 4 - 2?", 1),
])
def test_operations_that_compute_nothing_do_not_count(problem, ops):
    """The stretch pilot's proposer padded its sums with them to look harder (RESULTS.md, third sitting)."""
    assert computation(problem)[0] == ops
