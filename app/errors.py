"""One error shape for every failure: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from iclsel.contract import field_path
from iclsel.workers.backend import BackendUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status, headers=headers)


def problem(error: dict) -> tuple[str, str]:
    """(field, message) of one validation error; a body that is not JSON is the body's problem."""
    if error.get("type") == "json_invalid":
        where = error["loc"][-1] if isinstance(error["loc"][-1], int) else None
        reason = (error.get("ctx") or {}).get("error", "")
        return "body", f"not valid JSON{f' at character {where}' if where is not None else ''}" + (f" ({reason})" if reason else "")
    return field_path(error["loc"]), error["msg"]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error_response(error.status, error.code, error.message, error.field, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        problems = [problem(e) for e in error.errors()]
        field = problems[0][0] if problems else "body"
        message = "; ".join(f"{where}: {what}" for where, what in problems)
        return error_response(422, "invalid_input", message, field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        if error.status_code == 400 and error.detail == "There was an error parsing the body":
            return error_response(400, "invalid_body", "body: could not be read as JSON (invalid UTF-8, nested "
                                  "too deeply or a number with too many digits)", "body")
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return error_response(error.status_code, code.get(error.status_code, "http_error"), str(error.detail),
                              headers=getattr(error, "headers", None))

    @app.exception_handler(BackendUnavailable)
    async def queue_down(request: Request, error: BackendUnavailable):
        log.warning("backend unavailable: %s", error)
        return error_response(503, "unavailable", f"queue unavailable: {error}", headers={"Retry-After": "5"})
