"""method rlvr: the training split never meets the eval questions; rewards are the known answers;
a real run on the bundled model commits its questions, solutions and rewards."""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml
from click.testing import CliRunner

from minisir.cli import main
from minisir.errors import MinisirError
from minisir.evaluate import load_arithmetic, load_benchmark, question_split
from minisir.methods import rlvr
from minisir.labels import judge


@pytest.mark.parametrize("level", ["easy", "medium"])
def test_training_split_shares_no_question_text_with_eval(level):
    asked = {q.question for seed in range(3) for q in load_benchmark(f"arithmetic-{level}", n=400, seed=seed)}
    train = [q for seed in range(3) for q in load_arithmetic(600, seed, level, split="train")]
    assert len({q.question for q in train}) > 300  # a real stream, not a handful of repeats
    assert not asked & {q.question for q in train}
    assert all(question_split(q) == "test" for q in asked)
    assert {q.meta["kind"] for q in train} == {q.meta["kind"] for q in load_benchmark(f"arithmetic-{level}", n=10)}


def test_training_stream_reads_on_and_hard_has_no_training_split():
    first = load_arithmetic(10, 0, "easy", split="train")
    later = load_arithmetic(5, 0, "easy", split="train", start=5)
    assert [q.id for q in later] == [q.id for q in first[5:]]
    assert all(q.id.startswith("arithmetic-easy-train-0-") for q in first)
    with pytest.raises(MinisirError, match="no training split"):
        load_arithmetic(3, 0, "hard", split="train")


def test_reward_is_equivalence_with_the_known_answer():
    """rlvr pays 1 for a sample labels.judge finds right against the known answer."""
    texts = ["6 * 7 = 42. The answer is \\boxed{42}.", "The answer is \\boxed{42.0}.", "The answer is \\boxed{41}.",
             "The answer is 42."]  # the last: no box, no reward
    assert judge(texts, "42").correct == [True, True, False, False]


def test_jsonl_questions_cycle_in_a_seeded_order(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(5)))
    a = rlvr.training_questions(str(path), 0, 7, seed=1)
    assert sorted(q.question for q in a[:5]) == sorted(f"What is {i} + 1?" for i in range(5))
    assert [q.question for q in a[5:]] == [q.question for q in a[:2]]
    assert [q.question for q in rlvr.training_questions(str(path), 0, 5, seed=1)] == [q.question for q in a[:5]]


def test_rlvr_run_commits_questions_with_known_labels(tmp_path):
    run_dir = tmp_path / "run"
    recipe = {
        "model": {"gguf": "bundled", "prompt_style": "completion"},
        "sampler": {"n_ctx": 2048, "n_parallel": 8},
        "method": {"name": "rlvr", "questions": "arithmetic-easy", "questions_per_step": 2, "samples": 4,
                   "max_tokens": 24},
        "trainer": {"lora_rank": 4, "lora_alpha": 8, "micro_batch_tokens": 1024},
        "run": {"steps": 2, "seed": 0, "dir": str(run_dir), "next_command": "minisir run recipes/rlvr-arithmetic.yaml"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 0, result.output
    # the run ends with what to do next: report, a paired eval on the recipe's benchmark, browse, its own hint
    tail = result.output[result.output.index("step(s) committed"):]
    assert f"minisir report {run_dir}" in tail and f"minisir eval {run_dir} --compare base,latest" in tail
    assert f"minisir archive browse {run_dir}" in tail and "minisir run recipes/rlvr-arithmetic.yaml" in tail
    conn = sqlite3.connect(run_dir / "archive.sqlite")
    try:
        rows = conn.execute("SELECT key, text, label, label_source FROM problems ORDER BY id").fetchall()
        sols = conn.execute("SELECT p.key, s.text, s.reward FROM solutions s JOIN problems p ON p.id = s.problem_id"
                            ).fetchall()
        steps = [json.loads(m) for (m,) in conn.execute("SELECT metrics FROM steps ORDER BY step")]
    finally:
        conn.close()
    expected = load_arithmetic(4, 0, "easy", split="train")
    assert [r[1] for r in rows] == [q.question for q in expected]  # steps 0 and 1 read on through the stream
    labels = {r[0]: r[2] for r in rows}
    assert [labels[r[0]] for r in rows] == [q.answer for q in expected]
    assert {r[3] for r in rows} == {"known"}
    assert len(sols) == 4 * 4
    for key, text, reward in sols:  # each reward is the known answer's check of that very text
        assert reward == (1.0 if judge([text], labels[key]).correct[0] else 0.0)
    assert [s["questions"] for s in steps] == [2, 2]
