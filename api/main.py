"""The decision API: ``uvicorn api.main:create_app --factory`` (``make up`` starts it on 127.0.0.1:8000).

Resources are opened in the lifespan and kept on ``app.state``: the runtime (models, experiments, policy, event log)
is built from settings, started before the first request and closed — queues flushed — after the last.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.routing import Route

from api.errors import journal_full, validation_error
from api.routes import admin, decisions, ops, outcomes
from shadowgate.config import ApiSettings
from shadowgate.serving.journal import JournalFullError
from shadowgate.serving.runtime import Runtime, build_runtime

logger = logging.getLogger(__name__)


def create_app(
    *, runtime_factory: Callable[[], Runtime] | None = None, api_settings: ApiSettings | None = None
) -> FastAPI:
    """Build the app. Tests pass a ``runtime_factory`` (their own settings, model source, Redis)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = (runtime_factory or build_runtime)()
        runtime.start()
        app.state.runtime = runtime
        app.state.api_settings = api_settings or ApiSettings()
        logger.info("serving %s", runtime.models.snapshot.versions() or "the fallback policy (no model loaded)")
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(
        title="shadowgate decision API",
        version="1",
        summary="BNPL risk decisions from the champion, challengers scored in shadow, every decision logged.",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(JournalFullError, journal_full)
    for module in (decisions, outcomes, ops, admin):
        app.include_router(module.router)
    # The decision route is also mounted as a plain Starlette route, matched first: the endpoint only takes the
    # Request, so FastAPI's per-request dependency solving buys nothing there. The FastAPI declaration stays for the
    # OpenAPI schema and /docs; validation errors still go through FastAPI's 422 handler.
    app.router.routes.insert(
        0, Route(decisions.DECISION_PATH, decisions.assess, methods=["POST"], include_in_schema=False)
    )
    return app
