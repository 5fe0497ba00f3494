"""What the route modules share to document and answer their endpoints.

The error responses each route lists in the OpenAPI document (every one a `Problem` document,
``responses(*COMMON, *BODY, 404)``) and `json_response`, which answers a `agentspan.wire` model.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from agentspan.wire import PROBLEM_CONTENT_TYPE

__all__ = ["BODY", "COMMON", "ERRORS", "PROBLEM_REF", "json_response", "responses"]

PROBLEM_REF = {"schema": {"$ref": "#/components/schemas/Problem"}}
ERRORS = {
    400: "Malformed JSON body", 401: "Missing or invalid API key", 403: "The key's role may not do this",
    404: "Unknown id", 409: "Stale lease epoch, double decision or wrong run state",
    413: "Body too large", 422: "Invalid values", 503: "Store unavailable",
}  # fmt: skip
COMMON = (401, 422, 503)  # what any /api endpoint may answer
BODY = (400, 413)  # what an endpoint with a request body may answer too


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route's error statuses.

    Args:
        *statuses: HTTP statuses, each a key of `ERRORS`.

    Returns:
        Each status described and answered with a `Problem` document.
    """
    return {s: {"description": ERRORS[s], "content": {PROBLEM_CONTENT_TYPE: PROBLEM_REF}} for s in statuses}


def json_response(model: BaseModel, status: int = 200) -> Response:
    """Answers a model as JSON.

    Args:
        model: The answer.
        status: The HTTP status.

    Returns:
        The response; text that JSON cannot encode as UTF-8 (lone surrogates) is escaped.
    """
    try:
        body: str | bytes = model.model_dump_json()
    except ValueError:  # text the store holds that JSON cannot encode as UTF-8 (lone surrogates)
        body = json.dumps(model.model_dump(mode="json"), ensure_ascii=True)
    return Response(body, status_code=status, media_type="application/json")
