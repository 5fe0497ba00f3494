"""`agentspan_adk._codec`: the fast paths give what pydantic's ``model_dump`` and the core's
`digest` give (journaled outputs and input hashes keep their form across versions)."""

from __future__ import annotations

from google.adk.events import Event, EventActions
from google.adk.models import LlmResponse
from google.genai import types

from agentspan.hashing import digest
from agentspan_adk import _codec, _journal

CALL = types.Part(function_call=types.FunctionCall(name="add", args={"a": 1, "b": [2, {"c": None}]}, id="call-1"))
RESULT = types.Part(function_response=types.FunctionResponse(name="add", response={"result": 3}, id="call-1"))
THOUGHT = types.Part(text="let me think", thought=True, thought_signature=b"\x00\xffsig")


def rich_event() -> Event:
    return Event(
        author="calc", invocation_id="e-1", branch="root.calc", partial=False,
        content=types.Content(role="model", parts=[THOUGHT, types.Part(text="sum: "), CALL]),
        usage_metadata=types.GenerateContentResponseUsageMetadata(prompt_token_count=10, candidates_token_count=5),
        finish_reason=types.FinishReason.STOP, custom_metadata={"k": [1, "two"]}, model_version="m-1",
        actions=EventActions(state_delta={"x": 1}, transfer_to_agent="other"))


def test_dump_response_of_an_event_is_its_llm_response_fields():
    event = rich_event()
    dumped = _codec.dump_response(event)
    assert dumped == event.model_dump(mode="json", exclude_none=True, include=set(LlmResponse.model_fields))
    assert "author" not in dumped and "actions" not in dumped and dumped["custom_metadata"] == {"k": [1, "two"]}
    response = LlmResponse.model_validate(dumped)
    assert _codec.dump_response(response) == response.model_dump(mode="json", exclude_none=True) == dumped
    assert _codec.load_response(dumped).content == event.content


def test_call_ids_and_text_read_from_a_dumped_response():
    event = rich_event()
    assert _codec.calls_and_text(_codec.dump_response(event)) == (["call-1"], "sum: ")  # thoughts left out
    assert _codec.final_text(event) == "sum: "
    assert _codec.calls_and_text(_codec.dump_response(LlmResponse(error_code="RESOURCE_EXHAUSTED"))) == ([], None)
    parts = [CALL, types.Part(text="a"), types.Part(function_call=types.FunctionCall(name="f")), types.Part(text="b")]
    dumped = _codec.dump_response(LlmResponse(content=types.Content(role="model", parts=parts)))
    assert _codec.calls_and_text(dumped) == (["call-1", None], "ab")


def test_dump_content_is_model_dump_and_digests_add_up_as_hex_digests():
    contents = [types.Content(role="user", parts=[types.Part(text="hi")]),
                types.Content(role="model", parts=[THOUGHT, CALL]), types.Content(role="user", parts=[RESULT])]
    dumped = [_codec.dump_content(c) for c in contents]
    assert dumped == [c.model_dump(mode="json", exclude_none=True) for c in contents]
    expected = sum(int(digest(d), 16) for d in dumped) % (1 << 256)
    assert _codec.add_digests(0, dumped) == expected
    assert _codec.add_digests(_codec.add_digests(0, dumped[:1]), dumped[1:]) == expected


def test_dump_actions_keeps_only_what_changed():
    assert _codec.dump_actions(EventActions()) == {}
    assert _codec.dump_actions(EventActions(state_delta={})) == {}
    changed = EventActions(state_delta={"x": 1}, skip_summarization=False, transfer_to_agent="billing")
    assert _codec.dump_actions(changed) == {"state_delta": {"x": 1}, "skip_summarization": False,
                                            "transfer_to_agent": "billing"}
    assert _codec.dump_actions(changed, ("state_delta", "artifact_delta")) == {"state_delta": {"x": 1}}
    assert _codec.dump_actions(EventActions(transfer_to_agent="b"), ("state_delta", "artifact_delta")) == {}


def test_a_gemini_responses_cached_content_is_its_cached_input():
    """Gemini counts the cached content in ``prompt_token_count``: the call is priced with it as
    cached input (`agentspan.models.price_usd`)."""
    usage = {"prompt_token_count": 100, "candidates_token_count": 15, "thoughts_token_count": 5,
             "cached_content_token_count": 80}
    metrics = _journal._usage(({"usage_metadata": usage}, {}))
    assert (metrics.input_tokens, metrics.output_tokens, metrics.cached_input_tokens) == (100, 20, 80)
