"""One error contract for every route: what each status carries, and the handlers and route class that keep it.

* 422 is FastAPI's ``{"detail": [...]}``, one entry per failing field, with exception objects in ``ctx`` made
  readable: FastAPI's default handler JSON-encodes a ``ValueError`` raised by a validator as ``{}``.
* A body that is not UTF-8 is malformed JSON like any other: 422 ``json_invalid``, not FastAPI's bare 400 (nor the 500
  its encoder raised on the raw bytes).
* Every other error is ``{"detail": "<sentence>"}`` (:class:`~api.schemas.ErrorResponse`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from api.schemas import ErrorResponse, ValidationErrorResponse

_PLAIN = (str, int, float, bool, type(None))

_ERRORS: dict[int, tuple[type[Any], str]] = {
    status.HTTP_401_UNAUTHORIZED: (ErrorResponse, "The key of this endpoint's scope is missing or wrong (always, "
                                  "when the service has none configured)."),
    status.HTTP_404_NOT_FOUND: (ErrorResponse, "No such resource."),
    status.HTTP_409_CONFLICT: (ErrorResponse, "The change is not allowed in the resource's current state."),
    status.HTTP_413_CONTENT_TOO_LARGE: (ErrorResponse, "The request is larger than the service accepts."),
    status.HTTP_422_UNPROCESSABLE_CONTENT: (ValidationErrorResponse, "Invalid input (including a body that is not "
                                            "JSON or not UTF-8): every failing field with its location and message."),
    status.HTTP_503_SERVICE_UNAVAILABLE: (ErrorResponse, "The service cannot answer this now."),
}  # fmt: skip


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each error status it can return, with its body model.

    ``descriptions`` override the generic text per status, keyed ``e404=...``.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model, description = _ERRORS[code]
        out[code] = {"model": model, "description": descriptions.get(f"e{code}", description)}
        if code == status.HTTP_401_UNAUTHORIZED:
            out[code]["headers"] = {"WWW-Authenticate": {"description": "`ApiKey`", "schema": {"type": "string"}}}
        if code == status.HTTP_503_SERVICE_UNAVAILABLE:
            out[code]["headers"] = {
                "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
            }
    return out


def _readable(error: dict[str, Any]) -> dict[str, Any]:
    ctx = error.get("ctx")
    if isinstance(ctx, dict):
        error = {**error, "ctx": {k: v if isinstance(v, _PLAIN) else str(v) for k, v in ctx.items()}}
    if isinstance(error.get("input"), bytes | bytearray):
        # The raw body of a json_invalid error: not echoed back (it may be any size, and need not be text).
        error = {**error, "input": {}}
    return error


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with every failing field: ``loc`` (``["body", field, ...]``), ``type``, ``msg``, ``input``, ``ctx``."""
    assert isinstance(exc, RequestValidationError)
    detail = [_readable(dict(e)) for e in exc.errors()]
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": jsonable_encoder(detail)})


def not_utf8(error: UnicodeDecodeError) -> RequestValidationError:
    """The 422 of a body that is not UTF-8 (JSON text is UTF-8, RFC 8259), naming the first bad byte."""
    return RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", error.start),
                "msg": f"JSON decode error: the body is not UTF-8 (byte {error.start})",
                "input": {},
                "ctx": {"error": error.reason},
            }
        ]
    )


class JsonBodyRoute(APIRoute):
    """An ``APIRoute`` whose body, when FastAPI reads it as JSON, must be UTF-8: else a 422, like other bad JSON.

    FastAPI answers a body it cannot decode with a bare 400 (``There was an error parsing the body``), a status and a
    shape no other client error here has. The body is read once: FastAPI's handler gets the same cached bytes.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            try:
                (await request.body()).decode()
            except UnicodeDecodeError as error:
                raise not_utf8(error) from None
            return await handler(request)

        return checked


RETRY_AFTER_S = 5
"""What a refused client is told to wait before trying again."""


async def journal_full(request: Request, exc: Exception) -> JSONResponse:
    """503 + ``Retry-After`` when a decision or outcome cannot be journaled (it would be answered but not logged)."""
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": f"the decision log is unavailable, nothing was recorded: {exc}"},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
