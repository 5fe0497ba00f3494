"""The test harness's server process (`server_support.ServerProcess`) with two test workers on one
machine: a port picked as free can be taken by the other worker's server before ours binds it, and
that server answers ``/healthz`` as well as ours would."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import httpx

from server_support import ServerProcess


class _Impostor(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"runs": [{"id": "someone-elses-run"}]}')

    def log_message(self, *args: object) -> None:
        pass


def test_a_port_another_server_took_first_is_not_mistaken_for_ours(tmp_path: Path) -> None:
    server = ServerProcess(str(tmp_path / "s.db"))
    taken = server.port
    impostor = http.server.HTTPServer(("127.0.0.1", taken), _Impostor)
    thread = threading.Thread(target=impostor.serve_forever, daemon=True)
    thread.start()
    try:
        server.start()  # was: "healthy" at once (the impostor's answer), then every request went to it
        try:
            assert server.port != taken and server.proc is not None and server.proc.poll() is None
            assert httpx.get(f"{server.url}/api/runs").json()["runs"] == []
            assert "listening on" in server.output()
        finally:
            server.stop()
    finally:
        impostor.shutdown()
        impostor.server_close()
