"""Child processes for the crash tests, forked from a parent that has the frameworks imported.

A fresh interpreter spends ~3 s importing openai-agents (2-3 s for LangGraph or ADK) before a
crash test's child runs a single step, and most crash tests start two or three children. The
zygote is one process per test session that imports the frameworks once and forks a child per
request: each child is still a real process of its own (own pid, killed by a real SIGKILL, its own
store connections, threads and exit), running its script as ``__main__`` with the test's
environment, arguments and working directory, its stdout and stderr pipes of the test's. It exits
as an interpreter does (non-daemon threads joined, ``atexit`` handlers run, streams flushed).

Set ``AGENTSPAN_TESTS_FORK=0`` to start every child as a fresh interpreter instead.

Protocol, one Unix-socket (``SOCK_SEQPACKET``) connection per child: the test sends one JSON
message (``script``, ``args``, ``env``, ``cwd``) with the write ends of its stdout and stderr
pipes (``SCM_RIGHTS``); the zygote answers ``<pid>\\n`` once forked and ``<exit code>\\n``
(negative: killed by that signal, as `subprocess`) once the child is reaped.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

PRELOAD = (
    "agents", "agentspan", "agentspan.runtime", "agentspan.api", "agentspan_openai_agents",
    "agentspan_openai_agents.testing", "langchain_core.language_models.fake_chat_models",
    "langgraph.graph", "langgraph.prebuilt", "agentspan_langgraph", "google.adk.agents",
    "google.adk.runners", "google.genai.types", "agentspan_adk", "agentspan_adk.testing",
)
"""What every child would import anyway (never the tests' own modules, which hold state)."""


def _run_script(script: str, args: list[str], env: dict[str, str], cwd: str) -> int:
    """In the forked child: runs ``script`` as ``python script *args`` would; returns the exit code."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [script, *args]
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:0] = [str(Path(script).resolve().parent), *extra]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:  # what the interpreter does at exit
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        traceback.print_exc()
        code = code or 1
    return code


def serve(path: str) -> None:
    """The zygote: preloads, then forks a child per connection on ``path`` until stdin closes."""
    for name in PRELOAD:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # a request is one message
    listener.bind(path)
    listener.listen(16)
    waiting: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select(timeout=0.005):
            if key.fileobj is sys.stdin:
                return  # the test session ended
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
            request = json.loads(message)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    listener.close()
                    conn.close()
                    for other in waiting.values():
                        other.close()
                    os.dup2(fds[0], 1)
                    os.dup2(fds[1], 2)
                    for fd in fds:
                        os.close(fd)
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                    code = _run_script(request["script"], request["args"], request["env"], request["cwd"])
                finally:
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            _answer(conn, pid)
            waiting[pid] = conn
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                _answer(conn, os.waitstatus_to_exitcode(status))
                conn.close()


def _answer(conn: socket.socket, number: int) -> None:
    try:
        conn.sendall(f"{number}\n".encode())
    except OSError:
        pass  # the test stopped listening (it failed or was interrupted): nothing to tell


class Zygote:
    """The test session's zygote process (started on first use)."""

    _lock = threading.Lock()
    _instance: Zygote | None = None

    def __init__(self) -> None:
        self.path = str(Path(tempfile.mkdtemp(prefix="zygote-")) / "socket")
        self.process = subprocess.Popen([sys.executable, __file__, self.path], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the test zygote did not start (exit {self.process.wait()})")

    @classmethod
    def get(cls) -> Zygote:
        with cls._lock:
            if cls._instance is None or cls._instance.process.poll() is not None:
                cls._instance = Zygote()
            return cls._instance

    def spawn(self, script: str, args: list[str], env: dict[str, str]) -> ForkedChild:
        """Forks a child running ``script`` with ``args`` and ``env``."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(self.path)
            message = json.dumps({"script": script, "args": args, "env": env, "cwd": os.getcwd()})
            socket.send_fds(conn, [message.encode()], [out_w, err_w])
        finally:
            os.close(out_w)
            os.close(err_w)
        return ForkedChild(conn, out_r, err_r, [sys.executable, script, *args])


class ForkedChild:
    """What the tests use of `subprocess.Popen`, for a child forked by the zygote."""

    def __init__(self, conn: socket.socket, out_fd: int, err_fd: int, args: list[str]) -> None:
        self.args = args
        self._conn = conn
        self._received = b""
        self.pid = int(self._answer(None))
        self.stdout = open(out_fd, encoding="utf-8")
        self.stderr = open(err_fd, encoding="utf-8")
        self.returncode: int | None = None

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.wait(timeout=0)
            except subprocess.TimeoutExpired:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = int(self._answer(timeout))
            self._conn.close()
        return self.returncode

    def _answer(self, timeout: float | None) -> str:
        """The zygote's next answer line (raises `subprocess.TimeoutExpired` after ``timeout`` s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._received:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._conn], [], [], left)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            data = self._conn.recv(64)
            if not data:
                raise RuntimeError(f"the test zygote went away before child {self.args} ended")
            self._received += data
        line, self._received = self._received.split(b"\n", 1)
        return line.decode()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Reads stdout and stderr to their end, then waits (``timeout``: the whole of it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: dict[Any, list[bytes]] = {self.stdout: [], self.stderr: []}
        with selectors.DefaultSelector() as selector:
            for stream in chunks:
                selector.register(stream.fileno(), selectors.EVENT_READ, stream)
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
                for key, _ in selector.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        chunks[key.data].append(data)
                    else:
                        selector.unregister(key.fd)
        out, err = (b"".join(chunks[s]).decode() for s in (self.stdout, self.stderr))
        self.stdout.close()
        self.stderr.close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return out, err


def fork_enabled() -> bool:
    """Whether children are forked by the zygote (``AGENTSPAN_TESTS_FORK``, default on, POSIX only)."""
    return os.environ.get("AGENTSPAN_TESTS_FORK", "1") != "0" and hasattr(socket, "send_fds")


if __name__ == "__main__":
    serve(sys.argv[1])
