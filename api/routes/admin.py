"""Experiments (read: open; change: admin key) and model reloads (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from api.deps import AdminDep, RuntimeDep
from api.schemas import ExperimentShare, ExperimentTransition
from shadowgate.serving.experiment_store import ExperimentBookConflictError, ExperimentStoreUnavailableError
from shadowgate.serving.experiments import ExperimentNotFoundError, IllegalTransitionError

router = APIRouter(tags=["experiments"])


def _experiments(runtime: Any) -> dict[str, Any]:
    book = runtime.experiments.book
    return {
        "book_version": book.version,
        "experiments": [e.model_dump(mode="json") for e in book.experiments],
        "active": [e.id for e in book.active()],
        "store": runtime.experiments.status().as_dict(),
    }


@router.get("/v1/experiments")
async def list_experiments(runtime: RuntimeDep) -> dict[str, Any]:
    """Every experiment with its status, mode, share and version; the book version this replica serves and how it
    follows the shared book in Redis (``store``)."""
    return _experiments(runtime)


_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "The shared experiment book (Redis) is unreachable."}
}


async def _change(runtime: Any, action: Any) -> dict[str, Any]:
    try:
        # A compare-and-set against Redis: off the event loop, so that a slow Redis never stalls requests.
        changed = await run_in_threadpool(action)
    except ExperimentNotFoundError as error:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(error).strip("'\"")) from None
    except (IllegalTransitionError, ValueError, ExperimentBookConflictError) as error:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(error)) from None
    except ExperimentStoreUnavailableError as error:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(error), headers={"Retry-After": "1"}
        ) from None
    return {"experiment": changed.model_dump(mode="json"), **_experiments(runtime)}


@router.post("/v1/admin/experiments/{experiment_id}/transition", dependencies=[AdminDep], responses=_UNAVAILABLE)
async def transition_experiment(experiment_id: str, body: ExperimentTransition, runtime: RuntimeDep) -> dict[str, Any]:
    """Move an experiment through draft → active → completed | stopped (audited, in the book every replica follows)."""
    live = runtime.experiments
    return await _change(runtime, lambda: live.transition(experiment_id, body.to, actor=body.actor, reason=body.reason))


@router.post("/v1/admin/experiments/{experiment_id}/share", dependencies=[AdminDep], responses=_UNAVAILABLE)
async def set_experiment_share(experiment_id: str, body: ExperimentShare, runtime: RuntimeDep) -> dict[str, Any]:
    """Change a canary's treatment share (raising it only moves units from control to treatment)."""
    live = runtime.experiments
    return await _change(
        runtime, lambda: live.set_share(experiment_id, body.treatment_share, actor=body.actor, reason=body.reason)
    )


@router.post("/v1/admin/models/reload", dependencies=[AdminDep])
async def reload_models(runtime: RuntimeDep) -> dict[str, Any]:
    """Ask the registry now instead of waiting for the next poll."""
    changed = runtime.models.refresh()
    stats = runtime.models.stats
    return {
        "changed": changed,
        "aliases": runtime.models.snapshot.versions(),
        "registry_up": stats.source_up,
        "last_error": stats.last_error,
    }
