"""JSON for what crosses the durable boundary: journaled model responses, tool results, the
`EventActions` a call left behind, and hashes of model requests.

Only pydantic's JSON forms are stored (``model_dump(mode="json")``, read back with
``model_validate``); nothing is ever pickled.
"""

from __future__ import annotations

import hashlib
from typing import Any

from google.adk.events import EventActions
from google.adk.models import BaseLlm, LlmRequest, LlmResponse
from google.genai import types

from agentspan.hashing import canonical_json
from agentspan.jsontext import canonical
from agentspan.models import ModelId, explicit_model_id, parse_model_id
from agentspan.records import JSON

ENVELOPE = "__agentspan_adk__"
"""Marks a journaled output that carries `EventActions` next to the value (see `pack`)."""

_HASH_MOD = 1 << 256
_DEFAULT_ACTIONS = EventActions().__dict__
"""The fields of an `EventActions` nothing changed (compared with a live one's ``__dict__``)."""
_dump_llm_response = LlmResponse.__pydantic_serializer__.to_python
_dump_content = types.Content.__pydantic_serializer__.to_python


# ---- values with the actions they left behind -------------------------------------------
def dump_actions(actions: EventActions, fields: tuple[str, ...] | None = None) -> dict[str, JSON]:
    """The non-default fields of ``actions`` as JSON (only ``fields`` when given)."""
    values = actions.__dict__
    if values == _DEFAULT_ACTIONS:
        return {}  # the usual case (a call that changed nothing): one dict comparison in C
    if all(_is_unset(values.get(name)) for name in (fields or values)):
        return {}  # (or changed nothing asked for) without a model_dump
    data = actions.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    return {k: v for k, v in data.items() if v not in ({}, []) and (fields is None or k in fields)}


def _is_unset(value: Any) -> bool:
    """Whether an `EventActions` field value is left out by `dump_actions` whatever its default:
    None, or an empty dict or list (``False`` is not: a field defaulting to True may be False)."""
    return value is None or (type(value) in (dict, list) and not value)


def restore_actions(target: EventActions, data: dict[str, JSON]) -> None:
    """Sets the journaled fields on ``target`` (dicts are merged, other fields replaced)."""
    recorded = EventActions.model_validate(data)
    for name in recorded.model_fields_set:
        value = getattr(recorded, name)
        current = getattr(target, name)
        if isinstance(value, dict) and isinstance(current, dict):
            current.update(value)
        else:
            setattr(target, name, value)


def pack(value: JSON, actions: dict[str, JSON], key: str = "result") -> JSON:
    """The journaled form of a call's value: the value itself, or, when the call changed ADK's
    `EventActions` (state, transfers, confirmations...), an envelope holding both."""
    if not actions:
        return value
    return {ENVELOPE: 1, key: value, "actions": actions}


def unpack(output: JSON, key: str = "result") -> tuple[JSON, dict[str, JSON]]:
    """Splits what `pack` stored into ``(value, actions)``."""
    if isinstance(output, dict) and output.get(ENVELOPE) == 1:
        return output.get(key), output.get("actions") or {}
    return output, {}


# ---- model responses ----------------------------------------------------------------------
def dump_response(response: LlmResponse) -> dict[str, JSON]:
    """Serializes an `LlmResponse` (or the response part of an `Event`) to JSON.

    `LlmResponse`'s own serializer (what its ``model_dump`` calls) is used for an `Event` too: it
    dumps only the `LlmResponse` fields of a subclass instance, as ``model_dump(include=...)``
    of the event would, at half the cost.
    """
    return _dump_llm_response(response, mode="json", exclude_none=True)  # type: ignore[no-any-return]


def load_response(data: dict[str, JSON]) -> LlmResponse:
    """Rebuilds the `LlmResponse` journaled by `dump_response`."""
    return LlmResponse.model_validate(data)


def calls_and_text(response: dict[str, JSON]) -> tuple[list[str | None], str | None]:
    """Of a response as `dump_response` made it: the ids of the function calls it asked for (in
    order), and its `final_text`."""
    content = response.get("content")
    parts: list[dict[str, Any]] = (content.get("parts") or []) if isinstance(content, dict) else []  # type: ignore[assignment]
    ids: list[str | None] = []
    texts = []
    for part in parts:
        call = part.get("function_call")
        if call is not None:
            ids.append(call.get("id"))
        if part.get("text") and not part.get("thought"):
            texts.append(part["text"])
    return ids, "".join(texts) if texts else None


def final_text(response: LlmResponse) -> str | None:
    """The text of a response (thoughts left out), or None when it has none."""
    if not response.content or not response.content.parts:
        return None
    texts = [p.text for p in response.content.parts if p.text and not p.thought]
    return "".join(texts) if texts else None


# ---- model requests -------------------------------------------------------------------------
def dump_content(content: types.Content) -> JSON:
    """One message of a model request as JSON (``model_dump(mode="json", exclude_none=True)``)."""
    if type(content) is not types.Content:  # (a subclass: its own fields too)
        return content.model_dump(mode="json", exclude_none=True)
    return _dump_content(content, mode="json", exclude_none=True)  # type: ignore[no-any-return]


def add_digests(total: int, contents: list[JSON]) -> int:
    """Adds the digests of messages (as `dump_content` made them) to a running sum (mod 2**256):
    a request's order-free hash."""
    for content in contents:  # int(digest(content), 16), from the raw bytes
        total = (total + int.from_bytes(hashlib.sha256(canonical(content)).digest(), "big")) % _HASH_MOD
    return total


def request_extra(llm_request: LlmRequest) -> dict[str, JSON]:
    """The small parts of a model request hashed in full: model, instruction, tool names."""
    config = llm_request.config
    instruction: Any = config.system_instruction if config is not None else None
    if isinstance(instruction, types.Content):
        instruction = dump_content(instruction)
    elif instruction is not None and not isinstance(instruction, str):
        instruction = str(instruction)
    return {"model": llm_request.model, "system": instruction, "tools": sorted(llm_request.tools_dict)}


class RequestHasher:
    """A model request's input hash, ``digest([request_extra, sum hex])``, with the canonical JSON
    of the extra part (which holds the whole system instruction) kept while it does not change:
    each call then hashes the cached text and the sum, not the instruction again."""

    def __init__(self) -> None:
        self._extra: dict[str, JSON] | None = None
        self._prefix = ""

    def __call__(self, extra: dict[str, JSON], total: int) -> str:
        if extra != self._extra:
            self._extra, self._prefix = extra, "[" + canonical_json(extra) + ","
        # canonical_json([extra, hex]): a list's items joined by "," (a hex string needs no escape)
        return hashlib.sha256(f'{self._prefix}"{total:x}"]'.encode()).hexdigest()


# ---- model identity ------------------------------------------------------------------------
_PROVIDER_BY_MODULE = {
    "google.adk.models.google_llm": "google",
    "google.adk.models.anthropic_llm": "anthropic",
    "google.adk.models.lite_llm": "litellm",
    "agentspan_adk.testing": "scripted",
}


def model_identity(llm: BaseLlm | None, name: str | None) -> ModelId:
    """Labels a model for the trail as ``provider/model``."""
    explicit = getattr(llm, "agentspan_model_id", None)
    if isinstance(explicit, str):
        return explicit_model_id(explicit)  # the user's provider, whatever it is ("custom/local-llm")
    name = name or (llm.model if llm is not None else None) or "unknown"
    default = _PROVIDER_BY_MODULE.get(type(llm).__module__, "custom") if llm is not None else "custom"
    return parse_model_id(name, default_provider=default)  # LiteLlm names are "provider/model" already


def is_json(value: Any) -> bool:
    """Whether ``value`` is plain JSON (str-keyed dicts, lists, str, numbers, bools, None)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json(v) for k, v in value.items())
    return False
