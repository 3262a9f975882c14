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
from fastapi.routing import APIRoute
from starlette.routing import Route

from api.admission import Admission, AdmissionCollector
from api.docs import mount_docs
from api.errors import RETRY_AFTER_S, journal_full, validation_error
from api.routes import admin, decisions, ops, outcomes
from shadowgate.config import ApiSettings
from shadowgate.serving.journal import JournalFullError
from shadowgate.serving.runtime import Runtime, build_runtime

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Credit-risk decisions for Buy-Now-Pay-Later purchases, made safely: the **champion** model decides, every
**challenger** scores the same request in shadow, every decision is logged, and the outcomes reported later
(repayments, late instalments, defaults) become the labels all models are compared on.

**Keys.** Two scopes, each its own header and secret; neither key is accepted in the other's place.

| scope | header | setting | endpoints |
|---|---|---|---|
| admin | `X-API-Key` | `SHADOWGATE_API_KEY` | `/v1/admin/*`: experiment changes, model reloads |
| ingest | `X-Ingest-Key` | `SHADOWGATE_API_INGEST_KEY` | `POST /v1/outcomes` |

Decisions, health, metrics and read-only views need no key (put the service behind your gateway). A scope whose key
is not configured answers 401 to everyone.

**Errors.** Invalid input is a 422 listing every failing field (`loc`, `type`, `msg`); that includes a body that is
not JSON or not UTF-8. Every other error is `{"detail": "<sentence>"}`. No input a client can send yields a 5xx.
Numbers are JSON numbers (`true`, `false` and numeric strings are refused); timestamps are RFC 3339 with a time zone.

**Outcomes exactly once.** An outcome's id is derived from what it is (or from your `Idempotency-Key`), so a
retried outcome is recorded once: see `POST /v1/outcomes`.
"""

TAGS = [
    {"name": "decisions", "description": "Approve, deny or refer a purchase; one at a time or in batches."},
    {"name": "outcomes", "description": "Repayments, late instalments and defaults: the labels (ingest key)."},
    {"name": "experiments", "description": "Shadow and canary experiments: read openly, changed with the admin key."},
    {"name": "operations", "description": "Health, readiness, Prometheus metrics, served models, shadow comparison."},
]


def _operation_id(route: APIRoute) -> str:
    # The endpoint's function name: stable, readable ids for generated clients and for the document's links.
    return route.name


def create_app(
    *, runtime_factory: Callable[[], Runtime] | None = None, api_settings: ApiSettings | None = None
) -> FastAPI:
    """Build the app. Tests pass a ``runtime_factory`` (their own settings, model source, Redis)."""

    settings = api_settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = (runtime_factory or build_runtime)()
        runtime.start()
        app.state.runtime = runtime
        app.state.api_settings = settings
        runtime.registry.register(AdmissionCollector(app.state.admission))
        logger.info("serving %s", runtime.models.snapshot.versions() or "the fallback policy (no model loaded)")
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(
        title="shadowgate decision API",
        version="1",
        summary="BNPL risk decisions from the champion, challengers scored in shadow, every decision logged.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        generate_unique_id_function=_operation_id,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(
        Admission,
        max_in_flight=settings.max_in_flight,
        max_body_bytes=int(settings.max_body_mb * (1 << 20)),
        retry_after_s=RETRY_AFTER_S,
        max_loop_lag_s=settings.max_loop_lag_ms / 1000,
        state=app.state,
    )
    app.add_exception_handler(JournalFullError, journal_full)
    for module in (decisions, outcomes, ops, admin):
        app.include_router(module.router)
    mount_docs(app)
    # The decision route is also mounted as a plain Starlette route, matched first: the endpoint only takes the
    # Request, so FastAPI's per-request dependency solving buys nothing there. The FastAPI declaration stays for the
    # OpenAPI schema and /docs; validation errors still go through FastAPI's 422 handler.
    app.router.routes.insert(
        0, Route(decisions.DECISION_PATH, decisions.assess, methods=["POST"], include_in_schema=False)
    )
    return app
