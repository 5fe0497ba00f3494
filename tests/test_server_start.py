"""`agentspan server start` / ``python -m agentspan_server``: it says it listens once it does."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from server_support import free_port


def start_server(db: Path, port: int, *, cli: bool = False) -> subprocess.Popen[str]:
    """``agentspan server start`` (``cli``) or ``python -m agentspan_server``."""
    command = ["agentspan.cli", "server", "start"] if cli else ["agentspan_server"]
    return subprocess.Popen([sys.executable, "-m", *command, "--db", str(db), "--port", str(port)],
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_the_listening_line_comes_once_requests_are_accepted_and_ctrl_c_ends_it_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = start_server(tmp_path / "s.db", port, cli=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in line, line
        # at once, no retry: the socket was bound and listening before the line was printed
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=20).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0  # uvicorn re-raises the Ctrl-C it handled: not "Aborted!" (1)
    finally:
        proc.kill()
        _out, err = proc.communicate()
    assert "Aborted" not in err and "Traceback" not in err, err


def test_a_port_in_use_is_a_clear_error_and_nothing_says_listening(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_server(tmp_path / "s.db", port)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, (out, err)
    assert "listening" not in out
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in err, err
