"""Operations: health, readiness, Prometheus metrics, served models, shadow comparison."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import AdminCallerDep, RuntimeDep

router = APIRouter(tags=["operations"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers (no dependency checked)."""
    return {"status": "alive"}


_READY = {"application/json": {"schema": {"type": "object", "additionalProperties": True}}}


@router.get(
    "/health/ready",
    responses={
        200: {"description": "Ready: the champion is loaded.", "content": _READY},
        503: {"description": "Not ready: no champion model loaded yet (same body).", "content": _READY},
    },
)
async def ready(runtime: RuntimeDep, admin: AdminCallerDep) -> JSONResponse:
    """Ready when the champion is loaded. Anyone gets the status; the admin key (`X-API-Key`) also gets the details
    (models, Redis, the decision journal, the shadow process, the experiment book), whose error texts are not for
    everyone. While Redis is down decisions go on and wait in the journal; only a journal over its limit, or its disk
    failing, makes decisions answer 503."""
    code = status.HTTP_200_OK if runtime.ready else status.HTTP_503_SERVICE_UNAVAILABLE
    if not admin:
        return JSONResponse(
            {"status": "ready" if runtime.ready else "not_ready", "details": "send the admin key (X-API-Key)"},
            status_code=code,
        )
    snapshot = runtime.models.snapshot
    log = runtime.shadow.stats()
    body = {
        "status": "ready" if runtime.ready else "not_ready",
        "models": {alias: m.version for alias, m in snapshot.models.items()},
        "models_from": {alias: m.loaded_from for alias, m in snapshot.models.items()},
        "registry_up": runtime.models.stats.source_up,
        "redis": {"up": log.redis_up, "last_error": log.last_error},
        "journal": {
            "pending_bytes": runtime.shadow.pending_bytes,
            "committed": log.committed,
            "refused": runtime.shadow.refused,
            "disk_failed": runtime.shadow.journal_failed,
            "resyncs": log.resyncs,
            "missing": list(log.missing),
        },
        "shadow_process": {"up": runtime.shadow.alive, "pid": runtime.shadow.pid},
        "experiments": runtime.experiments.status().as_dict(),
    }
    return JSONResponse(body, status_code=code)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus exposition of every serving metric: decisions, request and per-model latency, shadow agreement
    and skips, model failures, and the event log (written, duplicates skipped, dead-lettered, journal bytes pending,
    Redis up)."""
    return Response(runtime.metrics_text(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(runtime: RuntimeDep) -> dict[str, Any]:
    """Alias → version served now, where it was loaded from, and the registry poller's state."""
    snapshot = runtime.models.snapshot
    stats = runtime.models.stats
    return {
        "model_name": snapshot.model_name,
        "generation": snapshot.generation,
        "loaded_at": snapshot.loaded_at.isoformat(),
        "aliases": {
            alias: {"version": m.version, "family": m.scorer.family, "loaded_from": m.loaded_from}
            for alias, m in snapshot.models.items()
        },
        "registry": {
            "up": stats.source_up,
            "last_refresh_ok": stats.last_refresh_ok,
            "last_error": stats.last_error,
            "swaps": stats.swaps,
            "refresh_failures": stats.refresh_failures,
        },
        "benched": runtime.shadow.benched(),
    }


@router.get("/v1/shadow/comparison")
async def shadow_comparison(runtime: RuntimeDep) -> dict[str, Any]:
    """Rolling agreement and score deltas of each shadow model against the served decision."""
    return {"window": runtime.shadow.comparison()}
