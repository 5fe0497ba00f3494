"""A local OpenAI-compatible Chat Completions server (stdlib HTTP, a real socket on 127.0.0.1).

It answers from a script and records every request body, so tests can count real HTTP model
calls made by the SDK's own `OpenAIChatCompletionsModel`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def tool_call_reply(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def text_reply(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


class ChatServer:
    """Serves scripted chat completions; ``requests`` holds the bodies received."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                index = len(server.requests)
                server.requests.append(body)
                reply = server.replies[min(index, len(server.replies) - 1)]
                payload = json.dumps({
                    "id": f"chatcmpl-{index}", "object": "chat.completion", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "message": reply, "finish_reason":
                                 "tool_calls" if reply.get("tool_calls") else "stop"}],
                    "usage": {"prompt_tokens": 50 + index, "completion_tokens": 7, "total_tokens": 57 + index},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
