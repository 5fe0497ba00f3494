"""`agentspan server start` / ``python -m agentspan_server``: it says it listens once it does."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentspan_server.main import listening_sockets

from server_support import free_port


def start_server(db: Path, port: int, *, cli: bool = False) -> subprocess.Popen[str]:
    """``agentspan server start`` (``cli``) or ``python -m agentspan_server``."""
    command = ["agentspan.cli", "server", "start"] if cli else ["agentspan_server"]
    return subprocess.Popen([sys.executable, "-m", *command, "--db", str(db), "--port", str(port)],
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; `docker stop`, systemd
def test_the_listening_line_comes_once_requests_are_accepted_and_a_stop_ends_it_cleanly(tmp_path: Path,
                                                                                      stop: signal.Signals) -> None:
    port = free_port()
    proc = start_server(tmp_path / "s.db", port, cli=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in line, line
        # at once, no retry: the socket was bound and listening before the line was printed
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=20).status_code == 200
        proc.send_signal(stop)
        assert proc.wait(timeout=20) == 0  # uvicorn re-raises the signal it handled: not "Aborted!" (1), not 143
    finally:
        proc.kill()
        _out, err = proc.communicate()
    assert "Aborted" not in err and "Traceback" not in err, err
    assert not (tmp_path / "s.db-wal").exists()  # the store was closed (its WAL checkpointed and removed)


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


def test_a_host_name_is_bound_on_every_address_it_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost`` listed as ``::1`` first (as many /etc/hosts do): a client of 127.0.0.1 must
    still reach the server, as it did when uvicorn bound the name itself."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = free_port()
    real = socket.getaddrinfo

    def ipv6_first(host: Any, *args: Any, **kwargs: Any) -> list[Any]:
        found = real(host, *args, **kwargs)
        if host != "localhost":
            return found
        v6 = real("::1", *args, **kwargs)
        return v6 + [entry for entry in found if entry[0] == socket.AF_INET]

    monkeypatch.setattr(socket, "getaddrinfo", ipv6_first)
    sockets = listening_sockets("localhost", port)
    try:
        assert sorted(s.getsockname()[0] for s in sockets) == ["127.0.0.1", "::1"]
        for address in ("127.0.0.1", "::1"):
            with socket.create_connection((address, port), timeout=5):
                pass  # accepted into the listening socket's backlog
    finally:
        for sock in sockets:
            sock.close()
