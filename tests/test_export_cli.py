"""`minisir export` after a step that trained nothing exports the newest step that did."""

from __future__ import annotations

from click.testing import CliRunner

from minisir.cli import main
from minisir.gguf_info import read_gguf_info
from minisir.loop import latest_state
from tiny_run import force_training, write_recipe


def test_latest_state_is_the_newest_saved_at_or_before_the_last_step(tmp_path):
    for step in (1, 3, 7):
        (tmp_path / f"step-{step:06d}").mkdir()
    (tmp_path / "step-000005.tmp").mkdir()  # an interrupted write is not a state
    assert latest_state(tmp_path, 5).name == "step-000003"
    assert latest_state(tmp_path, 7).name == "step-000007"
    assert latest_state(tmp_path, 0) is None
    assert latest_state(tmp_path / "missing", 9) is None


def test_export_after_an_idle_step(tmp_path, monkeypatch):
    from minisir.methods import opensir

    force_training(monkeypatch)
    trains = opensir.play

    def play(runner, step, phase, round_=0):  # step 1 trains nothing, whatever was sampled
        result = trains(runner, step, phase, round_)
        if step == 1:
            result.samples = []
        return result

    monkeypatch.setattr(opensir, "play", play)
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", run_dir, steps=2)
    cli = CliRunner()
    assert cli.invoke(main, ["run", str(recipe)]).exit_code == 0
    assert sorted(p.name for p in (run_dir / "state").iterdir()) == ["step-000000"]
    out = tmp_path / "merged.gguf"
    result = cli.invoke(main, ["export", str(run_dir), str(out), "--qtype", "f16"])
    assert result.exit_code == 0, result.output
    assert "step 1 trained nothing: exporting step 0" in result.stderr
    assert "merged model of step 0" in result.stdout
    info = read_gguf_info(out)
    assert info.arch == "gemma3" and info.tensors


def test_export_before_any_step_trained_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = CliRunner().invoke(main, ["export", str(run_dir), str(tmp_path / "m.gguf")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
