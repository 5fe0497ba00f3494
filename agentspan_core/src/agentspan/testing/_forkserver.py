"""Child processes forked from a server process that has the frameworks imported already.

A crash test's child is a fresh Python process that imports its agent's framework before it runs a
single step: ~3 s for openai-agents, 2-3 s for LangGraph or Google ADK. A fork server is one
process per test process and preload list (started on first use, ended when the test process
ends) that imports those modules once and forks a child per request. Each child is still a real
process of its own (own pid, killed by a real SIGKILL, its own store connections and threads), runs
with the requester's environment and working directory, its stdout and stderr on the file
descriptors the requester passed, stdin on ``/dev/null``, and exits as an interpreter does
(non-daemon threads joined, ``atexit`` handlers run, streams flushed).

The server forks only while it has a single thread (a fork copies no other thread); when it has
more, or cannot start, the requester gets `ForkServerUnavailable` and starts a fresh interpreter.
Linux only: macOS frameworks are not safe to use after a ``fork`` without ``exec``.

Protocol, one Unix-socket (``SOCK_SEQPACKET``) connection per child: the requester sends one JSON
message (what to run, ``env``, ``cwd``, ``fds_env``) with its file descriptors (``SCM_RIGHTS``:
stdout, stderr, then any others, whose numbers in the child go into the ``fds_env`` variable); the
server answers ``<pid>\\n`` once forked and ``<exit code>\\n`` (negative: killed by that signal, as
`subprocess`) once the child is reaped, or ``error <why>\\n`` instead of the pid.
"""

from __future__ import annotations

import atexit
import contextlib
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from agentspan.errors import ForkServerUnavailable

__all__ = ["ForkServer", "ForkServerUnavailable", "ForkedChild", "fork_supported"]

_START_TIMEOUT = 60.0
"""Seconds a server may take to import its preload list."""


def fork_supported() -> bool:
    """Whether this platform can fork children from a server (Linux, with ``socket.send_fds``)."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


# ---- the child ------------------------------------------------------------------------------
def _run(request: dict[str, Any]) -> int:
    """In the forked child: runs what ``request`` names as ``python`` would; returns the exit code."""
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    script, call = request.get("script"), request.get("call")
    sys.argv = [script or "-c", *request.get("args", [])]
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:0] = [str(Path(script).resolve().parent) if script else request["cwd"], *extra]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
    code = 0
    try:
        if script:
            runpy.run_path(script, run_name="__main__")
        else:
            module, _, function = cast(str, call).partition(":")  # `ForkServer.spawn` sends a script or a call
            getattr(importlib.import_module(module), function)()
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


def _fork(request: dict[str, Any], fds: list[int], keep_closed: list[socket.socket]) -> int:
    """Forks a child running ``request``; returns its pid (in the server)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        for sock in keep_closed:
            sock.close()
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds[:2]:
            if fd > 2:
                os.close(fd)
        if request.get("fds_env"):
            request["env"][request["fds_env"]] = ",".join(str(fd) for fd in fds[2:])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = _run(request)
    finally:
        os._exit(code)


# ---- the server ------------------------------------------------------------------------------
def serve(path: str, preload: Sequence[str]) -> None:
    """The server: imports ``preload``, then forks a child per connection on ``path`` until its
    stdin closes (the process that started it ended)."""
    with contextlib.redirect_stdout(sys.stderr):  # stdout says "ready" and nothing else
        for name in preload:
            try:
                importlib.import_module(name)
            except Exception:  # the child imports it again and reports the error itself
                continue
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # a request is one message
    listener.bind(path)
    listener.listen(16)
    waiting: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select(timeout=0.005 if waiting else None):
            if key.fileobj is sys.stdin:
                return
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 16)
            if _threads() > 1 or len(fds) < 2:
                why = "the fork server has threads" if len(fds) >= 2 else "no stdout and stderr were passed"
                _answer(conn, f"error {why}")
                conn.close()
            else:
                pid = _fork(json.loads(message), fds, [listener, conn, *waiting.values()])
                _answer(conn, str(pid))
                waiting[pid] = conn
            for fd in fds:
                os.close(fd)
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            waiter: socket.socket | None = waiting.pop(pid, None)
            if waiter is not None:
                _answer(waiter, str(os.waitstatus_to_exitcode(status)))
                waiter.close()


def _threads() -> int:
    """This process's threads, native ones included (those a C extension started)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _answer(conn: socket.socket, line: str) -> None:
    try:
        conn.sendall(f"{line}\n".encode())
    except OSError:
        pass  # the requester stopped listening (it failed or was interrupted): nothing to tell


# ---- the requester's side --------------------------------------------------------------------
class ForkServer:
    """A fork server of this process (one per preload list, started on first use)."""

    _lock = threading.Lock()
    _servers: dict[tuple[str, ...], ForkServer] = {}

    def __init__(self, preload: tuple[str, ...]) -> None:
        self.path = str(Path(tempfile.mkdtemp(prefix="agentspan-fork-")) / "socket")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agentspan.testing._forkserver", self.path, json.dumps(preload)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})  # preload as we import
        assert self.process.stdout is not None
        ready = select.select([self.process.stdout], [], [], _START_TIMEOUT)[0]
        if not ready or self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise ForkServerUnavailable(f"the fork server did not start (exit {self.process.wait()})")

    @classmethod
    def get(cls, preload: Sequence[str]) -> ForkServer:
        """This process's server for ``preload`` (started now if none runs).

        Raises:
            ForkServerUnavailable: Forking is not supported here, or the server did not start.
        """
        if not fork_supported():
            raise ForkServerUnavailable(f"children are not forked on {sys.platform}")
        key = tuple(preload)
        with cls._lock:
            server = cls._servers.get(key)
            if server is None or server.process.poll() is not None:
                server = cls._servers[key] = ForkServer(key)
            return server

    def spawn(self, *, script: str | None = None, call: str | None = None, args: Sequence[str] = (),
              env: dict[str, str], cwd: str, fds: Sequence[int], fds_env: str | None = None,
              read_fds: tuple[int, int] | None = None) -> ForkedChild:
        """Forks a child that runs ``script`` (a file, as ``__main__``) or ``call`` (``"module:function"``).

        Args:
            args: The child's ``sys.argv[1:]``.
            env: Its environment; cwd: its working directory.
            fds: Its stdout and stderr, then any file descriptors it needs (this call does not close them).
            fds_env: The variable that tells the child the numbers of ``fds[2:]`` (``"a,b"``).
            read_fds: The read ends of pipes on its stdout and stderr, for `ForkedChild.communicate`.

        Raises:
            ForkServerUnavailable: The server cannot fork now.
        """
        if (script is None) == (call is None):
            raise ValueError("spawn needs a script or a call, not both")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(self.path)
            message = json.dumps({"script": script, "call": call, "args": list(args), "env": env, "cwd": cwd,
                                  "fds_env": fds_env})
            socket.send_fds(conn, [message.encode()], list(fds))
            return ForkedChild(conn, [sys.executable, script or call or "", *args], read_fds)
        except OSError as exc:
            conn.close()
            raise ForkServerUnavailable(f"the fork server is gone: {exc}") from exc


def _stop_servers() -> None:
    for server in ForkServer._servers.values():
        if server.process.stdin is not None:
            server.process.stdin.close()  # the server returns; its children run to their end
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
        Path(server.path).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            Path(server.path).parent.rmdir()


atexit.register(_stop_servers)


class ForkedChild:
    """What callers use of `subprocess.Popen`, for a child forked by a `ForkServer`."""

    def __init__(self, conn: socket.socket, args: list[str], read_fds: tuple[int, int] | None) -> None:
        self.args = args
        self._conn = conn
        self._received = b""
        first = self._answer(None)
        if first.startswith("error"):
            conn.close()
            raise ForkServerUnavailable(first.removeprefix("error").strip())
        self.pid = int(first)
        self.returncode: int | None = None
        self.stdout = open(read_fds[0], encoding="utf-8") if read_fds else None
        self.stderr = open(read_fds[1], encoding="utf-8") if read_fds else None

    def kill(self) -> None:
        """SIGKILLs the child (unless it has been reaped)."""
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def poll(self) -> int | None:
        """The exit code, or None while the child runs."""
        if self.returncode is None:
            try:
                self.wait(timeout=0)
            except subprocess.TimeoutExpired:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Waits for the child's end; returns its exit code (raises `subprocess.TimeoutExpired`)."""
        if self.returncode is None:
            self.returncode = int(self._answer(timeout))
            self._conn.close()
        return self.returncode

    def _answer(self, timeout: float | None) -> str:
        """The server's next answer line (raises `subprocess.TimeoutExpired` after ``timeout`` s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._received:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._conn], [], [], left)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            data = self._conn.recv(64)
            if not data:
                raise ForkServerUnavailable(f"the fork server went away before child {self.args} ended")
            self._received += data
        line, self._received = self._received.split(b"\n", 1)
        return line.decode()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Reads stdout and stderr to their end, then waits (``timeout``: the whole of it)."""
        if self.stdout is None or self.stderr is None:
            raise ValueError("communicate needs the child's stdout and stderr pipes (read_fds)")
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


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]))
