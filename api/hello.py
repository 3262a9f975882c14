"""The HTTP ceiling for ``make bench-serving``: one FastAPI POST route that reads the body and answers a small JSON.

Run under exactly the uvicorn settings of the decision API (``uvicorn api.hello:create_app --factory``), it shows what
the server and framework cost before any work is done.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

HELLO_PATH = "/hello"


def create_app() -> FastAPI:
    """The hello-world app."""
    app = FastAPI(title="hello world")

    @app.post(HELLO_PATH)
    async def hello(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"decision": "approve", "message": "hello world"})

    return app
