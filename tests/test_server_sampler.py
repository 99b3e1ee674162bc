"""sampler.backend: openai against a real OpenAI-compatible server started here.

The server is llama-cpp-python's own (tests/openai_server.py) on the bundled model; with
--lora-api it also answers vLLM's runtime LoRA routes. Assertions hold whatever this CPU's
kernels sample: they check that what comes back is self-consistent (ids spell the text,
log-probs match a local llama.cpp), and every failure path is forced (a dead port, a
server killed mid-step, a fake server that answers garbage).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from click.testing import CliRunner

from minisir.assets import bundled_model_path
from minisir.cli import main
from minisir.sampler import Sampler
from minisir.server_sampler import ServerError, ServerSampler
from tiny_run import check_committed, force_training, write_recipe

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """tests/openai_server.py in a child process, killed when the test is done."""

    def __init__(self, tmp: Path, lora_api: bool = True, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests_log = tmp / f"requested-{self.port}-{time.monotonic_ns()}.txt"
        args = [sys.executable, str(HERE / "openai_server.py"), str(bundled_model_path()), str(self.port)]
        env = dict(os.environ, PYTHONPATH=str(HERE.parent), MINISIR_TEST_SERVER_LOG=str(self.requests_log))
        self.log = open(tmp / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen(args + (["--lora-api"] if lora_api else []), env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, (tmp / f"server-{self.port}.log").read_text()
            try:
                if requests.get(self.url + "/v1/models", timeout=2).ok:
                    return
            except requests.RequestException:
                time.sleep(0.5)
        raise AssertionError("the test server did not start in 180 s")

    def requested(self) -> list[str]:
        return self.requests_log.read_text().split() if self.requests_log.exists() else []

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def local():
    with Sampler(bundled_model_path(), n_ctx=1024, n_parallel=1) as s:
        yield s


PROMPTS = ["Question: What is 12 + 7?\nAnswer:", "Question: What is 3 + 4?\nAnswer:"]


def _spelled(sampler, c) -> str:
    """The text the completion's ids spell (end-of-generation tokens spell nothing)."""
    return sampler.detokenize([t for t in c.token_ids if not sampler.is_eog(t)])


def test_n_samples_ids_and_logprobs(server, local):
    with ServerSampler(server.url, bundled_model_path()) as s:
        out = s.generate(PROMPTS, n=[3, 2], max_tokens=6, temperature=1.0, seed=11)
    assert [len(g) for g in out] == [3, 2]  # topped up: this server answers one choice per request
    gaps, weighted = [], 0
    for prompt, group in zip(PROMPTS, out):
        for c in group:
            assert c.prompt_ids == local.tokenize(prompt)
            assert _spelled(local, c) == c.text
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert len(c.token_ids) == 6
            else:
                assert local.is_eog(c.token_ids[-1])  # ended by its own end-of-generation token
            if c.logprobs:
                weighted += 1
                assert len(c.logprobs) == len(c.token_ids) and max(c.logprobs) <= 0
                gaps.append(np.abs(np.array(local.score(c.prompt_ids, c.token_ids)) - c.logprobs))
    assert weighted >= 3, "the sampled ids and log-probs were not recovered from the server's tokens"
    # Same model, other batch shapes: quantised kernels differ by a few hundredths of a nat per token.
    assert float(np.mean(np.concatenate(gaps))) < 0.1


def test_stop_string_cuts_text_ids_and_logprobs(server, local):
    prompt = "Count: 1, 2, 3, 4, 5, 6,"
    with ServerSampler(server.url, bundled_model_path()) as s:
        [[free]] = s.generate([prompt], n=1, max_tokens=8, temperature=0.0, seed=3)
        assert len(free.text.strip()) >= 3, f"greedy continuation too short to place a stop in: {free.text!r}"
        at = len(free.text) // 2
        stop = free.text[at:at + 2]  # forced: the greedy text is known to contain it
        [[cut]] = s.generate([prompt], n=1, max_tokens=8, temperature=0.0, seed=3, stop=[stop])
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.find(stop)]
    assert _spelled(local, cut) == local.detokenize(free.token_ids[: len(cut.token_ids)])
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]
    assert stop not in local.detokenize(cut.token_ids)  # no token that wrote the stop string is kept
    if cut.logprobs:
        assert cut.logprobs == free.logprobs[: len(cut.logprobs)]


def test_bench_server_reports_both_paths_and_their_ratio(server):
    args = ["bench", "server", "--url", server.url, "--prompts", "2", "-n", "2", "--max-tokens", "6",
            "--parallel", "4", "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["benchmark"] == "server" and r["completions"] == 4  # topped up to n on this server
    for side in ("server", "in_process"):
        assert 4 <= r[f"{side}_tokens"] <= 4 * 6 and r[f"{side}_seconds"] > 0
        assert r[f"{side}_tokens_per_s"] == pytest.approx(r[f"{side}_tokens"] / r[f"{side}_seconds"], rel=0.01)
    assert r["server_vs_in_process"] == pytest.approx(r["server_tokens_per_s"] / r["in_process_tokens_per_s"],
                                                      rel=0.02, abs=0.01)
    assert 0 <= r["server_completions_with_logprobs"] <= 4


def test_bench_server_on_a_dead_url_is_one_line():
    url = f"http://127.0.0.1:{_free_port()}"
    res = CliRunner().invoke(main, ["bench", "server", "--url", url, "--json"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.stderr.strip().count("\n") == 0 and "cannot reach the server" in res.stderr


def test_a_dead_server_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(ServerError, match=r"cannot reach the server .*start it or fix sampler.url") as err:
        ServerSampler(url, bundled_model_path())
    assert "\n" not in str(err.value) and url in str(err.value)


class _Fake(http.server.BaseHTTPRequestHandler):
    """Answers every request with the class's canned status and body."""

    status, body = 200, b""

    def _answer(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(self.status)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, body, expected", [
    (200, b"<html>it works</html>", "not JSON"),
    (200, b'{"choices": [{"txt": 1}]}', "malformed completion"),
    (500, b"model exploded", "HTTP 500: model exploded"),
], ids=["html", "no-text", "http-500"])
def test_garbage_answers_are_one_line(status, body, expected):
    handler = type("Fake", (_Fake,), {"status": status, "body": body})
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{fake.server_port}"
        with pytest.raises(ServerError) as err:
            sampler = ServerSampler(url, bundled_model_path(), served_model="m")
            sampler.generate(["Question: 1 + 1?"], n=1, max_tokens=4)
        assert expected in str(err.value) and "\n" not in str(err.value)
    finally:
        fake.shutdown()


def _server_recipe(tmp_path: Path, run_dir: Path, url: str, steps: int) -> Path:
    recipe = write_recipe(tmp_path / "recipe.yaml", run_dir, steps=steps, teacher_max_tokens=16,
                          student_max_tokens=16, length_cap=16)
    data = yaml.safe_load(recipe.read_text())
    data["sampler"].update({"backend": "openai", "url": url, "timeout_s": 120})
    recipe.write_text(yaml.safe_dump(data))
    return recipe


def _one_line(result) -> str:
    """The error line, which must be the only one and the last (progress bars may come before it)."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("steps:")]
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_server_without_runtime_adapters_is_refused_at_start(tmp_path):
    plain = Server(tmp_path, lora_api=False)  # llama-cpp-python's server as shipped
    try:
        run_dir = tmp_path / "run"
        result = CliRunner().invoke(main, ["run", str(_server_recipe(tmp_path, run_dir, plain.url, 1))])
        assert result.exit_code == 2, (result.stderr, result.exception)
        line = _one_line(result)
        assert "cannot load LoRA adapters at runtime" in line and plain.url in line
        assert plain.requested() == []  # refused before any sampling
        assert not (run_dir / "adapters").exists()
    finally:
        plain.kill()


def test_run_samples_on_the_server_survives_its_death_and_resumes(tmp_path, monkeypatch):
    force_training(monkeypatch)  # every step trains and exports, whatever is sampled
    srv = Server(tmp_path)
    run_dir = tmp_path / "run"
    try:
        recipe = _server_recipe(tmp_path, run_dir, srv.url, steps=2)
        result = CliRunner().invoke(main, ["run", str(recipe)])
        assert result.exit_code == 0, (result.stderr, result.exception)
        check_committed(run_dir, 2)
        for step in (0, 1):  # the PEFT copy the server loads sits beside each GGUF
            assert (run_dir / "adapters" / f"step-{step:06d}" / "adapter_config.json").is_file()
        asked = set(srv.requested())
        assert "bundled" in asked, asked  # step 0 sampled the base model
        assert any(m.startswith("minisir-step-000000-") for m in asked), asked  # step 1 sampled step 0's adapter

        # The server dies in step 2, after its first answer (the teacher's top-up request then
        # finds it gone): one line, nothing of the step committed.
        real = ServerSampler._request

        def dies_after_one_answer(self, method, path, body=None, ok_404=False):
            answer = real(self, method, path, body, ok_404)
            if path == "/completions":
                srv.kill()
            return answer

        monkeypatch.setattr(ServerSampler, "_request", dies_after_one_answer)
        result = CliRunner().invoke(main, ["run", str(_server_recipe(tmp_path, run_dir, srv.url, steps=3))])
        assert result.exit_code == 2, (result.stderr, result.exception)
        assert "cannot reach the server" in _one_line(result)
        check_committed(run_dir, 2)
        assert not (run_dir / "adapters" / "step-000002").exists()

        # Back up on the same port: the step is simply retried.
        monkeypatch.setattr(ServerSampler, "_request", real)
        srv = Server(tmp_path, port=srv.port)
        result = CliRunner().invoke(main, ["run", str(_server_recipe(tmp_path, run_dir, srv.url, steps=3))])
        assert result.exit_code == 0, (result.stderr, result.exception)
        check_committed(run_dir, 3)
        asked = [m for m in srv.requested() if m != "None"]  # None: the adapter routes' own look-ups
        assert asked and all(m.startswith("minisir-step-000001-") for m in asked), asked  # the last adapter
    finally:
        srv.kill()


def test_recipe_needs_a_url():
    from minisir.recipe import SamplerConfig

    with pytest.raises(ValueError, match="backend openai needs sampler.url"):
        SamplerConfig(backend="openai")
    assert json.loads(SamplerConfig(backend="openai", url="http://x:1").model_dump_json())["backend"] == "openai"
