"""SQLM's curriculum: the proposer's last few-shot places show the hardest of the run's own
recent problems that its solvers could just solve (a real archive, no model)."""

from __future__ import annotations

from minisir.archive import Archive
from minisir.methods.sqlm import SQLMConfig, curriculum_pool, pick_frontier, proposer_prompt

TOPIC = "easy arithmetic"


def _cfg(**kw) -> SQLMConfig:
    fields = {"curriculum_examples": 2, "curriculum_window": 3, **kw}
    return SQLMConfig(topic=TOPIC, answer_kind="number", labels="program", topic_examples=["What is 1 + 2?"],
                      **fields)


def _archive(tmp_path) -> Archive:
    archive = Archive.open(tmp_path)
    archive.ensure_run({"model": {}, "method": {"name": "sqlm"}}, {}, 0)
    rows = {
        0: [("What is 91 * 97 - 5 + 3?", "print(91 * 97 - 5 + 3)", 1.0)],  # hardest, but out of the window
        1: [("What is 4 + 5?", "print(4 + 5)", 1.0),
            ("Ann has 12 apples, buys 30 more and eats 5. How many are left?", "print(12 + 30 - 5)", 1.0),
            ("Bob has 3 pens and buys 4 more. How many pens?", None, 1.0)],  # no program: cannot show how
        2: [("What is 7 * 8 + 2?", "print(7 * 8 + 2)", 1.0),
            ("What is 60 / 4 - 3 * 2?", "print(60 / 4 - 3 * 2)", 0.0)],  # not rewarded (outside the band)
    }
    for step, problems in rows.items():
        archive.commit_step({"step": step}, [{"key": f"p{i}", "text": t, "program": prog, "valid": True,
                                              "teacher_reward": r, "role": "proposer"}
                                             for i, (t, prog, r) in enumerate(problems)], [])
    return archive


def test_pool_holds_the_hardest_rewarded_problems_of_the_window(tmp_path):
    archive = _archive(tmp_path)
    try:
        pool = curriculum_pool(archive, step=4, cfg=_cfg(), program=True)
    finally:
        archive.close()
    problems = [p["problem"] if isinstance(p, dict) else p for p in pool]
    # two-step word problem, then two-step bare, then the one-step sum; step 0 is out of the window,
    # the unrewarded and the program-less problems never enter
    assert problems == ["Ann has 12 apples, buys 30 more and eats 5. How many are left?", "What is 7 * 8 + 2?",
                        "What is 4 + 5?"]
    assert curriculum_pool(_archive(tmp_path / "b"), 4, _cfg(curriculum_examples=0), True) == []


def test_rank_reads_the_labelling_computation_never_the_words():
    from minisir.difficulty import computation

    dressed = computation("What is the remainder when 4 + 3 is divided by a number of your choice?", "print(4 + 3)")
    assert dressed == (1, 1)  # words around a one-operator sum rank as that sum
    assert computation("What is 12 + 30 - 5?") == (2, 2)  # a bare problem is its own program
    assert computation("What is 12 + 30 - 5?") > dressed
    assert computation("What is 7 * 8?") < computation("What is 70 * 8?")  # then operand size
    assert computation("Tom has some pens.") == (0, 0)


def test_frontier_takes_the_last_few_shot_places(tmp_path):
    archive = _archive(tmp_path)
    try:
        pool = curriculum_pool(archive, step=4, cfg=_cfg(curriculum_pool=1), program=True)
    finally:
        archive.close()
    frontier = pick_frontier(pool, 2, seed=0)
    assert len(frontier) == 1  # the pool is smaller than k
    prompt = proposer_prompt(TOPIC, seed=0, kind="number", examples=["What is 1 + 2?", "What is 9 - 4?"],
                             program=True, frontier=frontier)
    shots = prompt.split("<problem>\n")[1:-1]
    assert len(shots) == 3 and shots[-1].startswith("Ann has 12 apples")
    assert "print(12 + 30 - 5)" in shots[-1]
    assert pick_frontier(pool * 3, 2, seed=5) == pick_frontier(pool * 3, 2, seed=5)  # seeded: resume replays it


def test_a_stretch_problem_paid_for_reach_stays_out_of_the_pool(tmp_path):
    """A stretch problem earned its proposer 1 for one right answer in 32: the solvers cannot yet do
    it, and examples of it led the proposer past them (RESULTS.md, third sitting)."""
    archive = Archive.open(tmp_path)
    archive.ensure_run({"model": {}, "method": {"name": "sqlm"}}, {}, 0)
    archive.commit_step({"step": 3}, [
        {"key": "a", "text": "What is 9 * 8 - 7 * 6 + 5?", "program": "print(9 * 8 - 7 * 6 + 5)", "valid": True,
         "teacher_reward": 1.0, "role": "proposer", "stretch": True},
        {"key": "b", "text": "What is 7 * 8 + 2?", "program": "print(7 * 8 + 2)", "valid": True,
         "teacher_reward": 1.0, "role": "proposer"}], [])
    try:
        pool = curriculum_pool(archive, step=4, cfg=_cfg(), program=True)
    finally:
        archive.close()
    assert [p["problem"] for p in pool] == ["What is 7 * 8 + 2?"]


def test_curriculum_rank_digits_puts_bigger_operands_before_more_operations(tmp_path):
    """method.curriculum_rank: operations climbs to chains of small numbers; digits to bigger operands."""
    from minisir.methods.sqlm import ranked, stretch_picks

    archive = Archive.open(tmp_path)
    archive.ensure_run({"model": {}, "method": {"name": "sqlm"}}, {}, 0)
    archive.commit_step({"step": 3}, [
        {"key": f"k{i}", "text": text, "program": None, "valid": True, "teacher_reward": 1.0, "role": "proposer"}
        for i, text in enumerate(["What is 2 + 3 + 4?", "What is 47 + 38?", "What is 6 + 7?"])], [])
    try:
        by_ops = curriculum_pool(archive, step=4, cfg=_cfg(), program=True)
        by_digits = curriculum_pool(archive, step=4, cfg=_cfg(curriculum_rank="digits"), program=True)
    finally:
        archive.close()
    assert by_ops == ["What is 2 + 3 + 4?", "What is 47 + 38?", "What is 6 + 7?"]
    assert by_digits == ["What is 47 + 38?", "What is 2 + 3 + 4?", "What is 6 + 7?"]
    work = {0: (2, 1), 1: (1, 2), 2: (1, 1)}  # the same three problems' (operations, digits)
    assert stretch_picks({i: ranked(w, "operations") for i, w in work.items()}, {}, k=1) == [0]
    assert stretch_picks({i: ranked(w, "digits") for i, w in work.items()}, {}, k=1) == [1]
