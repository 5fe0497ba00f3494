"""A local OpenAI-compatible Chat Completions server (stdlib HTTP, a real socket on 127.0.0.1).

It answers from a script and records every request body, so tests can count real HTTP model
calls made by the SDK's own `OpenAIChatCompletionsModel`. A request with ``"stream": true`` gets
the reply as server-sent ``chat.completion.chunk`` events.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agents import Agent, OpenAIChatCompletionsModel, function_tool
from openai import AsyncOpenAI


def tool_call_reply(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def text_reply(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def stream_chunks(reply: dict[str, Any], completion_id: str, model: str, usage: dict[str, int]) -> list[dict[str, Any]]:
    """A reply as ``chat.completion.chunk`` objects: its text word by word, each tool call whole,
    the finish reason, and the usage last (as with ``stream_options.include_usage``)."""
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": 1, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    words = re.findall(r"\S+\s*", reply.get("content") or "")
    chunks = [chunk({"role": "assistant", "content": word}) for word in words]
    for n, call in enumerate(reply.get("tool_calls") or []):
        chunks.append(chunk({"tool_calls": [{"index": n, **call}]}))
    chunks.append(chunk({}, "tool_calls" if reply.get("tool_calls") else "stop"))
    chunks.append({**base, "choices": [], "usage": usage})
    return chunks


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
                usage = {"prompt_tokens": 50 + index, "completion_tokens": 7, "total_tokens": 57 + index}
                if body.get("stream"):
                    self._stream(stream_chunks(reply, f"chatcmpl-{index}", body["model"], usage))
                    return
                payload = json.dumps({
                    "id": f"chatcmpl-{index}", "object": "chat.completion", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "message": reply, "finish_reason":
                                 "tool_calls" if reply.get("tool_calls") else "stop"}],
                    "usage": usage,
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, chunks: list[dict[str, Any]]) -> None:
                """Server-sent events, one chunk per event, then ``[DONE]`` (the connection closes)."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

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


# ---- an agent of the SDK's real Chat Completions model, pointed at such a server ----------------
weather_calls: list[str] = []
"""The cities `get_weather` was called with (clear it at the start of a test)."""


@function_tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    weather_calls.append(city)
    return f"sunny in {city}"


def weather_replies() -> list[dict[str, Any]]:
    """A ``get_weather("Paris")`` call (id ``call_abc``), then the answer."""
    return [tool_call_reply("get_weather", {"city": "Paris"}, "call_abc"), text_reply("It is sunny in Paris.")]


def weather_agent(base_url: str) -> Agent:
    """An agent with `get_weather` on the SDK's own `OpenAIChatCompletionsModel` at ``base_url``."""
    client = AsyncOpenAI(base_url=base_url, api_key="sk-test-not-real", max_retries=0)
    return Agent(name="weather", instructions="Answer about weather.", tools=[get_weather],
                 model=OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client))
