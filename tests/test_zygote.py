"""The crash tests' forked children (`zygote`) behave as fresh interpreters do where the tests look."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from zygote import Zygote, fork_enabled

from crash_support import run_child

pytestmark = pytest.mark.skipif(not fork_enabled(), reason="children are fresh interpreters here")

CHILD = textwrap.dedent("""
    import atexit, os, signal, sys, threading, time
    from pathlib import Path

    out = Path(sys.argv[1])
    print("argv", sys.argv[2:], "env", os.environ.get("ZYGOTE_PROBE"), "cwd", os.getcwd(), "pid", os.getpid())
    print("to stderr", file=sys.stderr)
    if sys.argv[2] == "kill":
        atexit.register(lambda: out.write_text("atexit ran"))
        os.kill(os.getpid(), signal.SIGKILL)
    if sys.argv[2] == "raise":
        raise ValueError("boom")

    def late() -> None:
        time.sleep(0.3)
        with out.open("a") as f:
            f.write("thread;")

    atexit.register(lambda: out.open("a").write("atexit;"))
    threading.Thread(target=late).start()  # not a daemon: the exit waits for it
    sys.exit(3)
""")


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def test_exit_code_argv_env_streams_threads_and_atexit(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_child(str(script), {**os.environ, "ZYGOTE_PROBE": "42"}, str(out), "a", "b")
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 3
    assert f"argv ['a', 'b'] env 42 cwd {os.getcwd()}" in done.stdout
    assert f"pid {os.getpid()}" not in done.stdout
    assert done.stderr == "to stderr\n"
    assert out.read_text() == "thread;atexit;"  # threads joined before the atexit handlers, as at exit


def test_sigkill_is_minus_nine_and_runs_nothing_after(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_child(str(script), dict(os.environ), str(out), "kill")
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == -9
    assert not out.exists()


def test_an_uncaught_exception_exits_1_with_its_traceback(script: Path, tmp_path: Path) -> None:
    done = run_child(str(script), dict(os.environ), str(tmp_path / "out"), "raise")
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 1
    assert "ValueError: boom" in done.stderr


def test_a_running_child_is_killed_and_waited_for(tmp_path: Path) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text("import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    child = Zygote.get().spawn(str(script), [], dict(os.environ))
    assert child.stdout.readline() == "up\n"
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.2)
    child.kill()
    deadline = time.monotonic() + 10
    while child.poll() is None:  # as Popen.poll: sees the exit without waiting for it
        assert time.monotonic() < deadline, "poll() never saw the killed child's exit"
        time.sleep(0.01)
    assert child.returncode == -9
    assert child.wait(timeout=10) == -9
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)  # reaped by the zygote
