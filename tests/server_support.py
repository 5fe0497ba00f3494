"""Real Agentspan servers for tests: in a thread (fast, for API-level tests) or as a subprocess
(``python -m agentspan_server``, for crash tests that SIGKILL servers too)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


class CountingTransport(httpx.BaseTransport):
    """An httpx transport that counts the requests it sends, as ``"METHOD /path"`` (in ``sent``)."""

    def __init__(self) -> None:
        self._real = httpx.HTTPTransport()
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        return self._real.handle_request(request)

    def close(self) -> None:
        self._real.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, *, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Polls ``url/healthz`` until it answers 200 (raises if the process exits or time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise RuntimeError(f"server exited with {proc.returncode}: {err or out}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server at {url} not healthy after {timeout}s")


@contextmanager
def thread_server(app: Any) -> Iterator[str]:
    """Serves an ASGI app with uvicorn in a background thread; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def sqlite_server(path: Any) -> Iterator[tuple[str, Any]]:
    """A server (uvicorn in a thread) over a SQLite store at ``path``; yields its URL and the store
    (what any other client sees)."""
    from agentspan.stores.sqlite import SqliteStore
    from agentspan_server.app import create_app

    backing = SqliteStore(path)
    try:
        with thread_server(create_app(backing)) as url:
            yield url, backing
    finally:
        backing.close()


class ServerProcess:
    """``python -m agentspan_server`` as a child process (killable with SIGKILL).

    Its output goes to a file, not a pipe nobody reads (a chatty server would block on a full
    pipe). `start` returns once this process says it listens: a healthy answer on the port could
    come from another test worker's server that took the port first (`free_port` only says it was
    free a moment ago), so a first start that finds the port taken picks another one.
    """

    def __init__(self, db: str, *, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.db = db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.env.pop("AGENTSPAN_SERVER_URL", None)
        self.proc: subprocess.Popen[str] | None = None
        self._output: Any = None
        self._started = False

    def start(self, *, timeout: float = 30.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while True:
            self._close_output()
            self._output = tempfile.TemporaryFile("a+", encoding="utf-8")  # (appends whatever our reads' offset)
            cmd = [sys.executable, "-m", "agentspan_server", "--db", self.db, "--port", str(self.port), *self.args]
            self.proc = subprocess.Popen(cmd, env=self.env, text=True, stdout=self._output,
                                         stderr=subprocess.STDOUT)
            try:
                if self._listening(deadline):
                    wait_healthy(self.url, proc=self.proc, timeout=max(1.0, deadline - time.monotonic()))
                    self._started = True
                    return self
            except BaseException:
                self.kill()  # not left running (its port, its database) by a start that failed
                raise
            output = self.output()
            if "Address already in use" not in output or time.monotonic() > deadline:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {output}")
            if not self._started:  # (a restart keeps its port: its clients know the URL)
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
            time.sleep(0.2)

    def _listening(self, deadline: float) -> bool:
        """Waits for the server's "listening" line (True) or its exit (False)."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            if "listening on" in self.output():
                return True
            if self.proc.poll() is not None:
                return "listening on" in self.output()
            time.sleep(0.05)
        raise RuntimeError(f"server at {self.url} did not listen within the time: {self.output()}")

    def output(self) -> str:
        """What the server printed so far (standard output and error)."""
        if self._output is None:
            return ""
        self._output.seek(0)
        return str(self._output.read())

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close_output()
