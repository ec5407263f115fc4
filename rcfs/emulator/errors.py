"""RingCentral's error bodies and the emulator's JSON responses.

Owns the wire format of failures: platform errors
`{"errorCode", "message", "errors": [{"errorCode", "message", "parameterName"?}]}`,
OAuth errors `{"error", "error_description", "errors": [...]}`, and a response
wrapper that drops the connection part-way through a body (the `reset` fault).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rcfs.emulator.faults import DropConnection

JSON_TYPE = "application/json; charset=utf-8"


class ParamError(Exception):
    """A query parameter failed validation: answered 400 with `code` (CMN-101, CMN-100)."""

    def __init__(self, parameter: str, value: str | None = None, code: str = "CMN-101") -> None:
        if code == "CMN-100":
            message = f"Mandatory parameter [{parameter}] not specified"
        else:
            message = f"Parameter [{parameter}] value is invalid"
        super().__init__(message)
        self.parameter = parameter
        self.value = value
        self.code = code
        self.message = message


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(data, status_code=status, headers=headers, media_type=JSON_TYPE)


def api_error(
    status: int,
    code: str,
    message: str,
    *,
    parameter: str | None = None,
    value: str | None = None,
    top_code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A platform error. `top_code` overrides the top-level code (TokenInvalid + OAU-213)."""
    error: dict[str, Any] = {"errorCode": code, "message": message}
    if parameter is not None:
        error["parameterName"] = parameter
        if value is not None:
            error["parameterValue"] = value
    body = {"errorCode": top_code or code, "message": message, "errors": [error]}
    return json_response(body, status, headers)


def param_error(err: ParamError) -> Response:
    return api_error(400, err.code, err.message, parameter=err.parameter, value=err.value)


def not_found(parameter: str, value: str) -> Response:
    return api_error(
        404,
        "CMN-102",
        f"Resource for parameter [{parameter}] is not found",
        parameter=parameter,
        value=value,
    )


def oauth_error(
    status: int, error: str, description: str, code: str, headers: dict[str, str] | None = None
) -> Response:
    body = {
        "error": error,
        "error_description": description,
        "errors": [{"errorCode": code, "message": description}],
    }
    return json_response(body, status, headers)


class DroppingResponse(Response):
    """Sends the status, headers and part of `inner`'s body, then drops the connection."""

    def __init__(self, inner: Response, fraction: float) -> None:
        super().__init__(inner.body, status_code=inner.status_code)
        self.raw_headers = list(inner.raw_headers)
        self.fraction = fraction

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        cut = int(len(self.body) * self.fraction)
        await send({"type": "http.response.body", "body": bytes(self.body[:cut]), "more_body": True})
        raise DropConnection("reset fault")


class DroppableStream(Response):
    """A streamed response that can drop its connection after `drop_after` of its body."""

    drop_after: float | None = None
