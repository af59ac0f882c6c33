"""The command line: a run end to end, progress lines for logs, listings, and the bad-input contract (one error line,
exit 2, no traceback, no folder left behind) over a table of bad invocations."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sia_bench.cli import main
from sia_bench.config import parse_pairs
from sia_bench.loop import Loop, RunConfig
from sia_bench.rundir import FolderLock
from tests.doubles import ScriptedModel, adder

ROOT = Path(__file__).resolve().parents[1]


def test_run_show_and_resume_finished(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["run", "--task", "toy_arithmetic", "--improver", "h", "--model", "tiny", "--limit", "4",
                 "--generations", "1", "--run-dir", str(run_dir), "-I", "minibatch=4"])
    assert code == 0
    err = capsys.readouterr().err  # stderr is not a terminal here: plain progress lines, no library chatter
    assert "scoring 4 val instances" in err and "val pass: 4/4 in" in err and "gen 1 done [" in err
    assert "scoring 4 test instances" in err and "deprecated" not in err
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["improver"]["args"]["minibatch"] == 4
    assert record["config"]["improver_options"] == {"minibatch": 4} and record["config"]["model"] == "tiny"
    assert record["models"]["task"]["model"] == "tiny-random-llama"
    assert record["environment"]["packages"]["torch"].startswith("2.13")
    assert (run_dir / "gen_000" / "harness" / "SKILL.md").exists()
    assert main(["show", str(run_dir)]) == 0
    assert "toy_arithmetic v1.0" in capsys.readouterr().out
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0  # a finished run stays finished


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Folders the bad invocations point at: a finished run, a torn record, a locked folder, a garbage harness."""
    root = tmp_path_factory.mktemp("places")
    other = root / "other-run"
    Loop(RunConfig(task="toy_arithmetic", improver="none", limit=2, budget={"generations": 0}), other,
         model=ScriptedModel(fn=adder())).run()
    torn = root / "torn"
    torn.mkdir()
    (torn / "run.json").write_text('{"schema_version": "1.0", "run_')
    (torn / "config.json").write_text("{}")
    garbage = root / "garbage-harness"
    garbage.mkdir()
    (garbage / "SKILL.md").write_text("---\nname: x\ndescription: y\n---\nHi\n")
    (garbage / "harness.toml").write_text("few_shot = = 3\n")
    (root / "locked").mkdir()
    FolderLock(root / "locked").acquire().release()  # its lock file exists before the tests compare folder contents
    (root / "empty").mkdir()
    return {"other": other, "torn": torn, "garbage": garbage, "locked": root / "locked", "empty": root / "empty"}


RUN = ["run", "--task", "toy_arithmetic", "--model", "tiny"]
ABLATE = ["ablate", "--task", "toy_arithmetic", "--model", "tiny", "--improvers", "none,h", "--seeds", "1"]
BAD = [  # (argv, words the one error line must hold); {name} is a folder of the `places` fixture
    (["run"], "--task is required"),
    (["run", "--task", "toy_arithmetc"], "Did you mean 'toy_arithmetic'"),
    (["run", "--task", "[/bold]"], "unknown task '[/bold]'"),
    (RUN + ["--improver", "hh"], "unknown improver 'hh'"),
    (RUN + ["-T", "max_operand=lots"], "-T max_operand=lots"),
    (RUN + ["-T", "colour=red"], "task 'toy_arithmetic' has no such option"),
    (RUN + ["-T", "max_operand=0"], "must lie in [1"),
    (RUN + ["-T", "=3"], "takes key=value"),
    (RUN + ["-T", "max_operand=\udcff"], "not valid UTF-8"),
    (RUN + ["-I", "edit_budget"], "takes key=value"),
    (RUN + ["--improver", "h", "-I", "minibatch=abc"], "-I minibatch=abc"),
    (RUN + ["--improver", "h", "-I", "h:minibatch=8"], "the arm:key form is for ablate"),
    (RUN + ["--budget", "gens=3"], "no such budget field. Did you mean 'generations'"),
    (RUN + ["--budget", "generations=abc"], "--budget generations=abc"),
    (RUN + ["--budget", "target=nan"], "finite"),
    (RUN + ["--budget", "task_rollouts=0"], "greater than or equal to 1"),
    (RUN + ["--budget", "wall_seconds=-5"], "greater than 0"),
    (RUN + ["--budget", "generations=99999999999"], "less than or equal to 100000"),
    (RUN + ["-M", "nonsense_option=1"], "-M nonsense_option: model backend 'tiny' has no such option"),
    (RUN + ["-M", "layers=two"], "-M layers=two"),
    (["run", "--task", "toy_arithmetic", "--model", "nosuch"], "unknown model backend 'nosuch'"),
    (RUN + ["-F", "batch_size=2"], "give --feedback-model too"),
    (RUN + ["--feedback-model", "nosuch"], "unknown model backend 'nosuch'"),
    (RUN + ["--limit", "0"], "--limit 0"),
    (RUN + ["--limit", "-1"], "--limit -1"),
    (RUN + ["--limit", "abc"], "invalid int value: 'abc'"),
    (RUN + ["--generations", "-1"], "--generations must be 0 or more"),
    (RUN + ["--seed", "-3"], "--seed -3"),
    (RUN + ["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (RUN + ["-H", "nosuch=1"], "-H nosuch: no such harness parameter"),
    (RUN + ["-H", "few_shot=abc"], "-H few_shot=abc"),
    (RUN + ["-H", "temperature=nan"], "finite"),
    (RUN + ["--harness", "/nonexistent/harness"], "no such folder"),
    (RUN + ["--harness", "{garbage}"], "harness.toml is not valid TOML"),
    (RUN + ["--run-dir", "{other}", "--seed", "5"], "holds another run"),
    (RUN + ["--run-dir", "{locked}"], "in use by another sia-bench process"),
    (["run", "--resume", "/nonexistent/run"], "not a run directory"),
    (["run", "--resume", "{other}", "--task", "toy_arithmetic"], "drop --task"),
    (["run", "--resume", "{torn}"], "run.json is unreadable"),
    (["show", "/nonexistent/run"], "not a run directory"),
    (["show", "{torn}"], "run.json is unreadable"),
    (ABLATE[:-4] + ["--improvers", "none,nope"], "unknown improver 'nope'"),
    (ABLATE[:-4] + ["--improvers", "none,none"], "must not repeat"),
    (ABLATE[:-2] + ["--seeds", "0"], "--seeds must be at least 1"),
    (ABLATE + ["-I", "w:minibatch=2"], "'w' is not one of the arms"),
    (ABLATE + ["--workers", "0"], "--workers must be at least 1"),
    (ABLATE + ["--address", "ray://x:1"], "--address is for --executor ray"),
    (ABLATE + ["--limit", "-2"], "--limit must be 0"),
    (ABLATE + ["--budget", "patience=0"], "greater than or equal to 1"),
    (ABLATE + ["-H", "parser=regex"], "must be one of"),
    (["baselines", "run", "--task", "toy_arithmetic", "--baseline", "nosuch"], "unknown baseline of toy_arithmetic"),
    (["baselines", "run", "--task", "toy_arithmetic", "--limit", "0"], "--limit must be at least 1"),
    (["baselines", "run", "--task", "nosuch"], "unknown task 'nosuch'"),
    (["leaderboard", "{empty}"], "no finished run records"),
]


@pytest.mark.parametrize("argv, words", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_gives_one_error_line_and_exit_2(argv, words, places, tmp_path, capsys):
    argv = [a.format(**{k: str(v) for k, v in places.items()}) if "{" in a else a for a in argv]
    out = tmp_path / "runs"
    if argv[0] in ("run", "ablate") and "--resume" not in argv:
        argv += ["--out", str(out)]
    if argv[0] == "leaderboard":
        argv += ["--out", str(out)]
    before = {p: sorted(x.name for x in p.iterdir()) for p in places.values()}
    if str(places["locked"]) in argv:  # another process holds it (a second flock stands for one)
        with FolderLock(places["locked"]):
            code = main(argv)
    else:
        code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert words in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()  # no run or ablation folder left behind
    assert before == {p: sorted(x.name for x in p.iterdir()) for p in places.values()}


def test_at_least_thirty_bad_invocations_are_checked():
    assert len(BAD) >= 30


@pytest.mark.parametrize("argv, words", [(["run", "--task", "[/bold]"], "unknown task '[/bold]'"),
                                         (["run", "--task", "toy_arithmetic", "--budget", "generations=abc"],
                                          "--budget generations=abc")])
def test_bad_input_through_a_real_process(argv, words, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sia_bench.cli", *argv, "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and words in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()


def test_library_chatter_never_reaches_the_user():
    code = ("from sia_bench.progress import quiet_libraries; quiet_libraries()\n"
            "import warnings\n"
            "from transformers.utils import logging as hf\n"
            "warnings.warn('`is_gradient_checkpointing` is deprecated and will be removed in v6.', FutureWarning)\n"
            "hf.get_logger('transformers.generation').warning('`past_key_values`/`cache_params` are deprecated.')\n"
            "hf.get_logger('transformers.generation').error('a real error stays visible')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert proc.returncode == 0, proc.stderr
    assert "deprecated" not in proc.stderr and "a real error stays visible" in proc.stderr


def test_listings(capsys):
    for what in ("tasks", "improvers", "models"):
        assert main([what]) == 0
    out = capsys.readouterr().out
    assert "toy_arithmetic" in out and "w+h-alternate" in out and "openai" in out


def test_option_pairs_keep_commas_inside_values():
    assert parse_pairs(["tools=retrieval,candidates,k=4"], "-T") == {"tools": "retrieval,candidates", "k": "4"}


def test_real_default_model_end_to_end(tmp_path):
    """The shipped SmolLM2-135M-Instruct answers a few toy questions through the whole loop."""
    run_dir = tmp_path / "real"
    assert main(["run", "--task", "toy_arithmetic", "--limit", "4", "--run-dir", str(run_dir), "--quiet"]) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["models"]["task"]["licence"] == "Apache-2.0"
    assert record["ledger"]["tokens_out"]["val"] > 0
    rows = [json.loads(line) for line in (run_dir / "gen_000" / "val.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["raw"] for r in rows)
