"""Data-parallel runs under `accelerate launch` on this CPU: two ranks, gloo, real processes.

`accelerate launch --multi_gpu --num_processes 2` starts the ranks through torchrun exactly as
on a multi-GPU machine; with no GPU visible, minisir joins them over gloo. (`--cpu
--num_processes 2` starts only one process unless mpirun is given: minisir refuses that.)
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minisir.data_parallel import Ranks
from minisir.trainer import GRPOTrainer, TrainerConfig
from tiny_models import tiny_hf_dir
from tiny_run import check_committed, read_run, write_recipe

HERE = Path(__file__).parent
WORKER = HERE / "dp_worker.py"
_CHILDREN: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _reap_children():
    """A failing assertion must not leave ranks running (torchrun's workers have sessions of their own)."""
    yield
    for proc in _CHILDREN:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _CHILDREN.clear()
    for pid in _tagged(TAG):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


TAG = f"minisir-dp-test-{os.getpid()}"  # in the environment of every process this module starts


def _tagged(tag: str, rank: int | None = None) -> list[int]:
    """Processes whose MINISIR_TEST_TAG starts with `tag` (and whose RANK is `rank`, when given)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = dict(v.split(b"=", 1) for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if env.get(b"MINISIR_TEST_TAG", b"").decode().startswith(tag) and (
                rank is None or env.get(b"RANK") == str(rank).encode()):
            found.append(int(pid))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    # No GPU for the ranks even where the test machine has one: this test is about gloo on CPUs.
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _launch(args: list[str], log: Path, ranks: int = 2, tag: str = "") -> subprocess.Popen:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(ranks),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(_free_port())]
    proc = subprocess.Popen(launcher + args, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env=dict(_env(), MINISIR_TEST_TAG=f"{TAG}:{tag}"), start_new_session=True)
    _CHILDREN.append(proc)
    return proc


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 900) -> tuple[int, str]:
    rc = proc.wait(timeout=timeout)
    return rc, log.read_text(errors="replace")


def test_one_rank_without_a_launcher():
    assert Ranks.from_env() == Ranks(0, 1, 0, 1)
    assert [list(Ranks(r, 3).share(8)) for r in range(3)] == [[0, 1], [2, 3, 4], [5, 6, 7]]


def test_two_ranks_sum_to_the_one_process_update(tmp_path):
    """The 2-rank step (each rank half the rows, gradients summed) moves the LoRA exactly as one process."""
    model_dir = tiny_hf_dir(tmp_path / "models", init=0.1)
    out = tmp_path / "two.pt"
    log = tmp_path / "train.log"
    rc, text = _finish(_launch([str(WORKER), "train", str(model_dir), str(out)], log), log, 300)
    assert rc == 0, text[-3000:]
    assert "terminate called" not in text  # no rank aborted at exit (its gloo group left first)
    two = torch.load(out, weights_only=False)
    assert two["world"] == 2 and two["group_left"]

    sys.path.insert(0, str(HERE))
    from dp_worker import fixed_samples

    torch.manual_seed(0)
    one = GRPOTrainer(TrainerConfig(learning_rate=1e-2, updates_per_step=2), None, hf_dir=model_dir, seed=0)
    base = {n: p.detach().clone() for n, p in one.model.named_parameters() if p.requires_grad}
    metrics = one.step(fixed_samples())
    moved = 0.0
    for name, p in one.model.named_parameters():
        if p.requires_grad:
            # Summation order differs (float32), and Adam divides near-zero gradients by their own
            # size: a few elements differ by ~3e-5, 1/300 of one update (lr 1e-2). Dropping a rank's
            # rows or double-counting them moves most elements by ~1e-2.
            torch.testing.assert_close(two["lora"][name], p.detach(), rtol=0, atol=1e-4)
            moved = max(moved, float((p.detach() - base[name]).abs().max()))
    assert moved > 1e-4  # the update is not a no-op that trivially agrees
    shares = two["shares"]
    assert len(shares) == 2 and all(s > 0 for s in shares) and sum(shares) == metrics["tokens"]
    # Adam hides a gradient scale error in the weights; the gradient norm and loss do not
    for key in ("loss", "grad_norm", "entropy", "kl", "clip_frac", "logprob_gap"):
        assert two["metrics"][key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-7), key


def test_sampling_is_shared_and_gathered(tmp_path):
    """9 (prompt, sample) items split 4/5, so prompt 1 straddles the ranks: its samples 1 and 2
    must still draw from streams (seed, 1, 1) and (seed, 1, 2) on rank 1, as one process alone
    draws them. First tokens come from the same prompt evaluation either way, so they and their
    log-probs must be equal (later tokens are decoded in batches of other sizes, whose kernels
    differ slightly)."""
    out = tmp_path / "groups.pkl"
    log = tmp_path / "sample.log"
    rc, text = _finish(_launch([str(WORKER), "sample", str(out)], log), log, 300)
    assert rc == 0, text[-3000:]
    saved = pickle.loads(out.read_bytes())
    groups, alone = saved["groups"], saved["one_process"]
    assert [len(g) for g in groups] == [3, 3, 3]
    assert [[c.rank for c in g] for g in groups] == [[0, 0, 0], [0, 1, 1], [1, 1, 1]]
    for g in groups:
        for c in g:
            assert c.prompt_ids and 1 <= len(c.token_ids) <= 8 and len(c.logprobs) == len(c.token_ids)
    assert [[(c.token_ids[0], c.logprobs[0]) for c in g] for g in groups] == \
        [[(c.token_ids[0], c.logprobs[0]) for c in g] for g in alone]


def test_cpu_launch_that_starts_one_process_is_refused(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "run", steps=1)
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "minisir", "run", str(recipe)],
        capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode != 0
    assert "started one process" in proc.stderr and "--multi_gpu" in proc.stderr
    assert "Traceback" not in proc.stderr.split("subprocess.CalledProcessError")[0].split("accelerate")[0]
    assert not (tmp_path / "run" / "archive.sqlite").exists()


def _ranks_of(run_dir: Path) -> dict[int, set]:
    conn = sqlite3.connect(f"{(run_dir / 'archive.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT step, extra FROM problems WHERE role = 'teacher'").fetchall()
        metrics = [json.loads(m) for (m,) in conn.execute("SELECT metrics FROM steps ORDER BY step")]
    finally:
        conn.close()
    out: dict[int, set] = {}
    for step, extra in rows:
        out.setdefault(step, set()).add(json.loads(extra or "{}").get("rank"))
    return out, metrics


def test_two_rank_run_survives_a_killed_rank_and_resumes_on_one(tmp_path):
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", run_dir, steps=2)
    log = tmp_path / "run.log"

    # 1. two ranks, two steps
    rc, text = _finish(_launch([str(WORKER), "cli", "run", str(recipe)], log), log)
    assert rc == 0, text[-4000:]
    assert text.count("2 step(s) committed") == 1  # rank 0 speaks for the run
    check_committed(run_dir, 2)
    ranks, metrics = _ranks_of(run_dir)
    assert ranks == {0: {0, 1}, 1: {0, 1}}  # both ranks' teacher samples in every step
    assert all(m["ranks"] == 2 and m["train_rank_tokens"] > 0 for m in metrics)

    # 2. two ranks again, to step 4; rank 1 is SIGKILLed while step 3 is in flight
    write_recipe(recipe, run_dir, steps=4)
    proc = _launch([str(WORKER), "cli", "run", str(recipe)], log, tag=str(tmp_path))
    deadline = time.monotonic() + 900
    while len(read_run(run_dir)["steps"]) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
        time.sleep(0.2)
    victims = _tagged(f"{TAG}:{tmp_path}", rank=1)
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    rc, text = _finish(proc, log, 300)
    assert rc != 0
    before = read_run(run_dir)
    check_committed(run_dir, 3)

    # 3. resume with ONE process (no launcher): it replays step 3 and keeps every committed row
    one = subprocess.run([sys.executable, str(WORKER), "cli", "run", str(recipe)], capture_output=True, text=True,
                         env=_env(), timeout=900)
    assert one.returncode == 0, one.stderr[-4000:]
    assert "resuming" in one.stderr + one.stdout and "at step 3" in one.stderr + one.stdout
    after = check_committed(run_dir, 4)
    for key in ("problems", "solutions", "adapters"):  # nothing committed before the kill changed
        assert all(r in after[key] for r in before[key]), key
    _, metrics = _ranks_of(run_dir)
    assert [m.get("ranks") for m in metrics] == [2, 2, 2, None]  # step 3 ran on one rank


def test_only_rank_0_reports_to_the_trackers(tmp_path):
    """run.report_to under two ranks: rank 0 alone writes TensorBoard events (one file), each step once."""
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", run_dir, steps=1)
    data = yaml.safe_load(recipe.read_text())
    data["run"]["report_to"] = ["tensorboard"]
    recipe.write_text(yaml.safe_dump(data))
    log = tmp_path / "run.log"
    rc, text = _finish(_launch([str(WORKER), "cli", "run", str(recipe)], log), log)
    assert rc == 0, text[-4000:]
    assert len(list((run_dir / "tb").iterdir())) == 1, "a rank other than 0 wrote events"
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={SCALARS: 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("ranks")] == [(0, 2.0)]
    assert [e.step for e in acc.Scalars("train_loss")] == [0]
