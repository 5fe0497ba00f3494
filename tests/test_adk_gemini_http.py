"""ADK's real `Gemini` model class (google-genai over real HTTP to a local Gemini server), through
`agentspan.run` and through a user-built Runner with `AgentspanPlugin`: journaled with provider,
model and tokens from ``usageMetadata``, and replayed without sending completed calls again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentspan

from adk_gemini_support import APP, MODEL, SESSION_ID, make_agent, run_with_plugin
from gemini_server import GeminiServer, Reply, Usage, call_reply, offline_gemini_env, text_reply
from journal_utils import crashed_copy

API_KEY = "test-key-not-real-4d1f"
CALL = call_reply("get_weather", {"city": "Paris"}, Usage(prompt=49, candidates=15, thoughts=48))
FINAL = text_reply("Sunny in Paris.", Usage(prompt=88, candidates=15))
# gemini-2.5-flash list price: $0.30 / $2.50 per million tokens; thinking tokens bill as output
COST_CALL, COST_FINAL = (49 * 0.30 + (15 + 48) * 2.50) / 1e6, (88 * 0.30 + 15 * 2.50) / 1e6


@pytest.fixture
def gemini_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fake API key, nothing that could redirect google-genai, no proxies, no egress."""
    with offline_gemini_env(monkeypatch, API_KEY):
        yield


def llm_rows(steps: list[agentspan.Step]) -> list[tuple[object, ...]]:
    return [(s.key, s.provider, s.model, s.input_tokens, s.output_tokens, s.cost_usd)
            for s in steps if s.kind is agentspan.StepKind.LLM]


def assert_key_never_stored(home: Path) -> None:
    """The API key is in no stored byte: not in the store file, its WAL, or anything else."""
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "agentspan.db" for p in files)
    for path in files:
        assert API_KEY.encode() not in path.read_bytes(), path


def test_agentspan_run_journals_real_gemini_and_replays_it(home: Path, gemini_env: None, tmp_path: Path) -> None:
    tool_log = tmp_path / "tool.log"
    with GeminiServer([CALL, FINAL, FINAL]) as server:
        handle = agentspan.start(make_agent(server.base_url, tool_log), "Weather in Paris?")
        assert handle.result(timeout=30).text == "Sunny in Paris."
        assert len(server.model_calls) == 2 and tool_log.read_text() == "Paris\n"
        assert server.model_calls[0].headers["x-goog-api-key"] == API_KEY  # the key was really used
        steps = handle.steps()
        assert llm_rows(steps) == [
            ("weather/llm:0", "google", MODEL, 49, 63, pytest.approx(COST_CALL)),
            ("weather/llm:1", "google", MODEL, 88, 15, pytest.approx(COST_FINAL))]
        assert handle.usage()["input_tokens"] == 137 and handle.usage()["output_tokens"] == 78

        # a process that died after the tool call: the model call and the tool are replayed
        tool_step = next(s for s in steps if s.kind is agentspan.StepKind.TOOL)
        copy_id = crashed_copy(handle.id, keep=steps.index(tool_step) + 1)
        resumed = agentspan.resume(copy_id, make_agent(server.base_url, tool_log)).result(timeout=30)
        assert resumed.text == "Sunny in Paris."
        assert len(server.model_calls) == 3 and tool_log.read_text() == "Paris\n"
    bodies = [call.body for call in server.model_calls]
    assert bodies.count(bodies[0]) == 1, "the completed first model call was sent again"
    # the one live call after the replay is byte-identical to the original second call: the
    # journaled response (function call, thought signature) and tool output rebuilt the same
    # conversation, though ADK made up a new random function-call id this time
    assert server.model_calls[2].body == server.model_calls[1].body
    assert llm_rows(agentspan.get(copy_id).steps()) == llm_rows(steps)
    assert_key_never_stored(home)


def test_plugin_run_killed_mid_gemini_call_resumes_without_resending(home: Path, gemini_env: None,
                                                                      tmp_path: Path) -> None:
    import asyncio

    tool_log = tmp_path / "tool.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    with GeminiServer([CALL, Reply(parts=FINAL.parts, usage=FINAL.usage, hold=True), FINAL]) as server:
        child = subprocess.Popen([sys.executable, str(Path(__file__).parent / "adk_gemini_support.py"),
                                  server.base_url, str(tool_log)], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while len(server.model_calls) < 2:  # the second model call is in flight (held)
                assert child.poll() is None, child.communicate()
                assert time.monotonic() < deadline, "the child never made its second model call"
                time.sleep(0.02)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
        assert tool_log.read_text() == "Paris\n"
        (run,) = agentspan.get_store().list_runs()
        assert run.status is agentspan.RunStatus.RUNNING  # its owner is dead; its lease runs out

        # the same session and message again, in this process: the plugin claims the run
        assert asyncio.run(run_with_plugin(server.base_url, tool_log)) == "Sunny in Paris."
    bodies = [call.body for call in server.model_calls]
    assert len(bodies) == 3 and bodies.count(bodies[0]) == 1, "the completed first model call was sent again"
    assert tool_log.read_text() == "Paris\n"
    assert server.model_calls[2].body == server.model_calls[1].body  # the in-doubt call, re-sent as it was
    (after,) = agentspan.get_store().list_runs()
    assert (after.id, after.status, after.agent, after.session_id) == (
        run.id, agentspan.RunStatus.COMPLETED, f"{APP}/weather", SESSION_ID)
    assert llm_rows(agentspan.get(run.id).steps()) == [
        ("weather/llm:0", "google", MODEL, 49, 63, pytest.approx(COST_CALL)),
        ("weather/llm:1", "google", MODEL, 88, 15, pytest.approx(COST_FINAL))]
    assert_key_never_stored(home)
