import textwrap

from sia_bench.sandbox import run_python


def script(tmp_path, body):
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_result_comes_back(tmp_path):
    res = run_python(script(tmp_path, "import json; json.dump({'x': 2}, open('result.json', 'w'))"),
                     workdir=tmp_path / "w")
    assert res.ok and res.output == {"x": 2}


def test_hang_is_killed(tmp_path):
    res = run_python(script(tmp_path, "while True: pass"), workdir=tmp_path / "w", timeout_s=1.5)
    assert res.timed_out and "timed out" in res.error and res.seconds < 10


def test_memory_limit(tmp_path):
    res = run_python(script(tmp_path, "x = bytearray(3 * 1024 ** 3)"), workdir=tmp_path / "w", memory_mb=512)
    assert not res.ok and "MemoryError" in res.error


def test_segfault_is_reported(tmp_path):
    res = run_python(script(tmp_path, "import ctypes; ctypes.string_at(0)"), workdir=tmp_path / "w")
    assert not res.ok and "segmentation fault" in res.error


def test_reading_outside_the_sandbox_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("labels")
    res = run_python(script(tmp_path, f"print(open({str(secret)!r}).read())"), workdir=tmp_path / "w")
    assert not res.ok and "outside the sandbox" in res.stderr


def test_no_result_is_an_error(tmp_path):
    res = run_python(script(tmp_path, "print('hi')"), workdir=tmp_path / "w")
    assert res.error == "the program wrote no result" and "hi" in res.stdout
