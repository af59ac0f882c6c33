import subprocess
import sys
import textwrap

import pytest

from sia_bench.registry import IMPROVERS, TASKS, Registry, UnknownNameError


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError) as err:
        TASKS.get("legal_charge")
    message = str(err.value)
    assert "Did you mean 'legal_charges'" in message
    assert "Available:" in message and "toy_arithmetic" in message


def test_lazy_entries_resolve_on_first_get():
    reg: Registry = Registry("thing", "sia_bench.test_nothing")
    reg.register("path", "pathlib:Path")
    assert reg._entries["path"] == "pathlib:Path"  # not imported yet
    from pathlib import Path

    assert reg.get("path") is Path


def test_decorator_registration():
    reg: Registry = Registry("thing", "sia_bench.test_nothing")

    @reg.register("double")
    def double(x):
        """Doubles."""
        return 2 * x

    assert reg.get("double")(3) == 6
    assert reg.describe("double") == "Doubles."


def test_builtin_improvers_are_listed():
    assert {"none", "h", "w", "wh", "bt", "w+h-alternate"} <= set(IMPROVERS.names())


def test_cli_listing_does_not_import_torch():
    code = "import sys; from sia_bench.registry import TASKS; TASKS.names(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_third_party_task_through_entry_point(tmp_path):
    """A throwaway package with a `sia_bench.tasks` entry point shows up in `sia-bench tasks` and runs."""
    pkg = tmp_path / "thirdparty_task"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from tasks.toy_arithmetic.task import ToyArithmeticTask

        class EchoTask(ToyArithmeticTask):
            """A third-party task registered by entry point."""
            name = "echo_thirdparty"
    '''))
    dist = tmp_path / "thirdparty_task-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-task\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sia_bench.tasks]\necho_thirdparty = thirdparty_task:EchoTask\n")
    env_path = f"{tmp_path}"
    code = ("import sys; sys.path.insert(0, %r); from sia_bench.cli import main; sys.exit(main(['tasks']))" % env_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        "PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{_repo_root()}", "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "echo_thirdparty" in out.stdout
    assert "A third-party task registered by entry point" in out.stdout


def _repo_root():
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1])
