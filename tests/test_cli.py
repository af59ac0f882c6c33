import json

import pytest

from sia_bench.cli import main


def test_run_show_and_resume_finished(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["run", "--task", "toy_arithmetic", "--improver", "h", "--model", "tiny", "--limit", "4",
                 "--generations", "1", "--run-dir", str(run_dir), "-I", "minibatch=4", "--quiet"])
    assert code == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["improver"]["args"]["minibatch"] == 4
    assert record["models"]["task"]["model"] == "tiny-random-llama"
    assert record["environment"]["packages"]["torch"].startswith("2.13")
    assert (run_dir / "gen_000" / "harness" / "SKILL.md").exists()
    capsys.readouterr()
    assert main(["show", str(run_dir)]) == 0
    assert "toy_arithmetic v1.0" in capsys.readouterr().out
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0  # a finished run stays finished


@pytest.mark.parametrize("argv, message", [
    (["run", "--task", "toy_arithmetc"], "Did you mean 'toy_arithmetic'"),
    (["run", "--task", "toy_arithmetic", "--improver", "hh"], "unknown improver 'hh'"),
    (["run", "--task", "toy_arithmetic", "-T", "max_operand=lots"], "max_operand"),
    (["run", "--task", "toy_arithmetic", "-T", "colour=red"], "task 'toy_arithmetic' has no such option"),
    (["run", "--task", "toy_arithmetic", "--model", "tiny", "-I", "edit_budget"], "takes key=value"),
    (["run", "--task", "toy_arithmetic", "--budget", "gens=3"], "--budget"),
    (["show", "/nonexistent/run"], "not a run directory"),
])
def test_bad_input_gives_one_clear_error_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "error:" in err and "Traceback" not in err


def test_listings(capsys):
    for what in ("tasks", "improvers", "models"):
        assert main([what]) == 0
    out = capsys.readouterr().out
    assert "toy_arithmetic" in out and "w+h-alternate" in out and "openai" in out


def test_kv_parsing_keeps_commas_inside_values():
    from sia_bench.cli import _kv

    assert _kv(["tools=retrieval,candidates,k=4"], "-T") == {"tools": "retrieval,candidates", "k": 4}


def test_real_default_model_end_to_end(tmp_path):
    """The shipped SmolLM2-135M-Instruct answers a few toy questions through the whole loop."""
    run_dir = tmp_path / "real"
    assert main(["run", "--task", "toy_arithmetic", "--limit", "4", "--run-dir", str(run_dir), "--quiet"]) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["models"]["task"]["licence"] == "Apache-2.0"
    assert record["ledger"]["tokens_out"]["val"] > 0
    rows = [json.loads(line) for line in (run_dir / "gen_000" / "val.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["raw"] for r in rows)
