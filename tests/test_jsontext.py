"""`agentspan.jsontext`: orjson's speed with the standard library's rules (hashes stay stable)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

import pytest

from agentspan import jsontext
from agentspan.hashing import canonical_json, digest

DOCUMENTS = [
    None, True, 0, -7, 3.5, 0.0001, 1.5e16, "", "é ✓ \u2028 \x1f \"quoted\"",
    [1, [2, [3]], {"k": None}],
    {"b": 1, "a": {"d": [1, 2.25], "c": "x"}, "é": True, "A": False, "": 0},
    {"output": [{"type": "function_call", "name": "add", "arguments": '{"a":1}', "call_id": "c1"}]},
]


def _stdlib_canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("value", DOCUMENTS)
def test_canonical_and_compact_text_equal_the_standard_librarys(value: object) -> None:
    assert canonical_json(value) == _stdlib_canonical(value)
    assert jsontext.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert jsontext.loads(jsontext.dumps(value)) == value


def test_values_orjson_refuses_are_encoded_as_the_standard_library_does() -> None:
    big = {"n": 2**70, "m": -(2**65)}
    keyed = {2: "b", 1: "a"}
    assert canonical_json(big) == _stdlib_canonical(big)
    assert canonical_json(keyed) == '{"1":"a","2":"b"}'
    assert jsontext.dumps(keyed) == '{"2":"b","1":"a"}'
    assert digest(keyed) == digest({"1": "a", "2": "b"})


@dataclass
class _Point:
    x: int


@pytest.mark.parametrize("value", [datetime.datetime(2026, 1, 1), _Point(1), object(), {"k": {1, 2}}])
def test_what_json_refuses_is_refused_with_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsontext.dumps(value)
    with pytest.raises(TypeError, match="not JSON serializable"):
        digest(value)


def test_a_value_that_contains_itself_is_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        jsontext.dumps(loop)


def test_text_the_standard_library_wrote_still_decodes() -> None:
    assert str(jsontext.loads('{"x": NaN}')["x"]) == "nan"
    assert jsontext.loads(b'{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        jsontext.loads("{not json")


def test_integers_past_64_bits_decode_as_integers() -> None:
    big = 123456789012345678901234567890
    assert jsontext.loads(f'{{"v": {big}, "w": [-{big}]}}') == {"v": big, "w": [-big]}
    assert jsontext.loads(f"[{2**64}, 1.5]".encode()) == [2**64, 1.5]
    assert jsontext.loads(jsontext.dumps({"v": big})) == {"v": big}
    below = -(2**63) - 1  # 19 digits, below int64 (was decoded by orjson as -9.223372036854776e+18)
    assert jsontext.loads(f"[{below}, {-(2**63)}]") == [below, -(2**63)]
    assert jsontext.loads(f"[{2**64 - 1}]") == [2**64 - 1]
    assert type(jsontext.loads(jsontext.dumps([below]).encode())[0]) is int


class _Payload(Exception):
    """An API error that answers attributes from its body (a common pattern), raising for others."""

    def __init__(self, data: dict[str, str]) -> None:
        super().__init__(data["message"])
        self.data = data

    def __getattr__(self, name: str) -> str:
        return self.data[name]  # KeyError for a name the body lacks


class _Anything(Exception):
    def __getattr__(self, name: str) -> str:
        return f"<{name}>"


def test_error_text_names_the_type_of_a_users_exception_whatever_its_attributes_answer() -> None:
    assert jsontext.error_text(_Payload({"message": "backend said no"})) == "_Payload: backend said no"
    assert jsontext.error_text(_Anything("x")) == "_Anything: x"
    adapted = RuntimeError("ScriptedLlm has no turn 2")
    adapted.agentspan_error_type = "IndexError"  # an adapter's stand-in for a framework's error report
    assert jsontext.error_text(adapted) == "IndexError: ScriptedLlm has no turn 2"
