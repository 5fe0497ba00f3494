"""Text no store holds, refused by `RemoteStore` as every store refuses it (`base.unstorable`).

A lone surrogate (``"\\udcff"``) in an id, a name or a message is not UTF-8: SQLite and
PostgreSQL cannot bind it, and the in-memory store refuses it the same way. Through a server it
would be refused too, but with pydantic's words: in the client when building a request body whose
field has a length limit (``ValidationError``, ``string_unicode``), or by the server parsing the
body. `RemoteStore` raises the stores' `ConfigurationError` instead, before anything is sent.

Both checks cost nothing on the common path: `refuse_unstorable` runs only where building a body
raised, and `request_json` walks a body's texts only where pydantic could not encode it (a lone
surrogate somewhere: in a text, refused, or in a JSON value, which every store keeps escaped).
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from agentspan.jsontext import model_json
from agentspan.stores.base import check_storable, unstorable

__all__ = ["check_texts", "refuse_unstorable", "request_json"]

_TEXT, _TEXTS, _MODEL, _MODELS = range(4)
_FIELDS: dict[type[BaseModel], tuple[tuple[str, int], ...]] = {}
"""Per model class, its fields holding text or models (a JSON value's texts are not checked)."""


def request_json(body: BaseModel, where: str) -> bytes:
    """``body`` as the JSON of a request (`jsontext.model_json`).

    Args:
        body: The request body.
        where: The store, as its errors name it (the server's URL).

    Raises:
        ConfigurationError: A text of the body (not a JSON value) holds a lone surrogate.
    """
    try:
        return body.model_dump_json().encode()
    except ValueError:  # a lone surrogate (pydantic's PydanticSerializationError is a ValueError)
        check_texts(body, where)
        return model_json(body)  # in a JSON value: sent as its escape


def check_texts(model: BaseModel, where: str) -> None:
    """Refuses a model whose texts (its ``str`` fields and those of the models it holds, not its
    JSON values) hold a lone surrogate.

    Args:
        model: A record or a request body.
        where: The store, as its errors name it.

    Raises:
        ConfigurationError: A text holds a lone surrogate (`base.unstorable`).
    """
    for name, kind in _fields(type(model)):
        value = getattr(model, name)
        if value is None:
            continue
        if kind == _TEXT:
            check_storable(where, value)
        elif kind == _TEXTS:
            check_storable(where, *value)
        elif kind == _MODEL:
            check_texts(value, where)
        else:
            for item in value:
                check_texts(item, where)


def refuse_unstorable(exc: ValidationError, where: str) -> None:
    """Raises the stores' error in place of pydantic's refusal of text holding a lone surrogate
    (``string_unicode``: building a field with a length limit from it); returns for another error,
    for the caller to raise.

    Args:
        exc: The error of building a request body.
        where: The store, as its errors name it.

    Raises:
        ConfigurationError: ``exc`` refused a text holding a lone surrogate (`base.unstorable`).
    """
    for error in exc.errors():
        text = error.get("input")
        if error["type"] == "string_unicode" and isinstance(text, str):
            try:
                text.encode()
            except UnicodeEncodeError as bad:
                raise unstorable(where, bad) from exc


def _fields(cls: type[BaseModel]) -> tuple[tuple[str, int], ...]:
    """The fields of ``cls`` to check, by their annotation (cached per class)."""
    known = _FIELDS.get(cls)
    if known is None:
        found = ((name, _kind(field.annotation)) for name, field in cls.model_fields.items())
        known = _FIELDS[cls] = tuple((name, kind) for name, kind in found if kind is not None)
    return known


def _kind(annotation: Any) -> int | None:
    """How a field of this annotation is checked: a text, a list of texts, a model, a list of
    models, or not (a JSON value, a number, an enum: none holds an id, a name or a message)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # ``X | None``
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) != 1:
            return None
        annotation = args[0]
    if annotation is str:
        return _TEXT
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _MODEL
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (None,)
        if item is str:
            return _TEXTS
        if isinstance(item, type) and issubclass(item, BaseModel):
            return _MODELS
    return None
