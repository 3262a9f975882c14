"""Experiments (read: open; change: admin key) and model reloads (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from api.deps import AdminDep, RuntimeDep
from api.errors import JsonBodyRoute, error_responses
from api.schemas import ExperimentShare, ExperimentTransition, RollbackRequest
from shadowgate.decisioning.experiments import ExperimentNotFoundError, IllegalTransitionError
from shadowgate.registry import AliasMoveRefusedError, DeploymentNotRecordedError
from shadowgate.storage.experiment_store import ExperimentBookConflictError, ExperimentStoreUnavailableError

router = APIRouter(tags=["experiments"], route_class=JsonBodyRoute)

_CHANGE_ERRORS = error_responses(
    status.HTTP_401_UNAUTHORIZED,
    status.HTTP_404_NOT_FOUND,
    status.HTTP_409_CONFLICT,
    status.HTTP_422_UNPROCESSABLE_CONTENT,
    status.HTTP_503_SERVICE_UNAVAILABLE,
    e401="No valid admin key in `X-API-Key` (always, when the service has none configured).",
    e404="No experiment with this id.",
    e409="Not allowed from the experiment's current status (e.g. draft → completed), or not for its mode; or the "
    "change kept losing races to other replicas' changes.",
    e503="The shared experiment book (Redis) is unreachable; nothing was changed.",
)


def _experiments(runtime: Any) -> dict[str, Any]:
    book = runtime.experiments.book
    return {
        "book_version": book.version,
        "experiments": [e.model_dump(mode="json") for e in book.experiments],
        "active": [e.id for e in book.active()],
        "store": runtime.experiments.status().as_dict(),
    }


def _link(operation: str, description: str) -> dict[str, Any]:
    return {
        "operationId": operation,
        "parameters": {"experiment_id": "$response.body#/experiments/0/id"},
        "description": description,
    }


@router.get(
    "/v1/experiments",
    responses={
        200: {
            "description": "The experiment book.",
            "links": {
                "TransitionExperiment": _link("transition_experiment", "Move a listed experiment (admin key)."),
                "SetExperimentShare": _link("set_experiment_share", "Change a listed canary's share (admin key)."),
            },
        }
    },
)
async def list_experiments(runtime: RuntimeDep) -> dict[str, Any]:
    """Every experiment with its status, mode, share and version; the book version this replica serves and how it
    follows the shared book in Redis (``store``)."""
    return _experiments(runtime)


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


@router.post("/v1/admin/experiments/{experiment_id}/transition", dependencies=[AdminDep], responses=_CHANGE_ERRORS)
async def transition_experiment(experiment_id: str, body: ExperimentTransition, runtime: RuntimeDep) -> dict[str, Any]:
    """Move an experiment through draft → active → completed | stopped (audited, in the book every replica follows)."""
    live = runtime.experiments
    return await _change(runtime, lambda: live.transition(experiment_id, body.to, actor=body.actor, reason=body.reason))


@router.post("/v1/admin/experiments/{experiment_id}/share", dependencies=[AdminDep], responses=_CHANGE_ERRORS)
async def set_experiment_share(experiment_id: str, body: ExperimentShare, runtime: RuntimeDep) -> dict[str, Any]:
    """Change a canary's treatment share (raising it only moves units from control to treatment)."""
    live = runtime.experiments
    return await _change(
        runtime, lambda: live.set_share(experiment_id, body.treatment_share, actor=body.actor, reason=body.reason)
    )


@router.post(
    "/v1/admin/models/reload",
    dependencies=[AdminDep],
    responses=error_responses(
        status.HTTP_401_UNAUTHORIZED,
        e401="No valid admin key in `X-API-Key` (always, when the service has none configured).",
    ),
)
async def reload_models(runtime: RuntimeDep) -> dict[str, Any]:
    """Ask the registry now instead of waiting for the next poll."""
    changed = await run_in_threadpool(runtime.models.refresh)  # a registry round trip: never on the event loop
    stats = runtime.models.stats
    return {
        "changed": changed,
        "aliases": runtime.models.snapshot.versions(),
        "registry_up": stats.source_up,
        "last_error": stats.last_error,
    }


@router.post(
    "/v1/admin/models/rollback",
    dependencies=[AdminDep],
    tags=["models"],
    responses=error_responses(
        status.HTTP_401_UNAUTHORIZED,
        status.HTTP_409_CONFLICT,
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        status.HTTP_503_SERVICE_UNAVAILABLE,
        e401="No valid admin key in `X-API-Key` (always, when the service has none configured).",
        e409="Refused: no `@previous` to roll back to (none yet, or a rollback already used it), or no champion.",
        e503="The model registry (or this replica's access to it) is unavailable; nothing was moved.",
    ),
)
async def rollback_champion(body: RollbackRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """Move `@champion` back to `@previous` and remove `@previous`: audited (a `deployment_events` row and tags on
    the versions, with the reason), then this replica swaps at once (others within their registry poll). Requests
    keep being answered throughout. The same as `shadowgate rollback --reason …`."""
    if runtime.rollback is None:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail="this replica has no model registry to move"
        )
    recorded = True
    warning = None
    try:
        events = await run_in_threadpool(runtime.rollback, body.reason, f"api:{body.actor}")
    except AliasMoveRefusedError as error:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=f"refused: {error}") from None
    except DeploymentNotRecordedError as error:
        # The alias moved (recorded in MLflow); the warehouse row will be sent again (record-deployments).
        events, recorded, warning = [error.event], False, str(error)
    except Exception as error:  # the registry is down: nothing moved
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"model registry unavailable: {type(error).__name__}: {error}"[:500],
            headers={"Retry-After": "5"},
        ) from None
    await run_in_threadpool(runtime.models.refresh)
    return {
        "moves": [
            {"alias": e.alias, "from_version": e.from_version, "to_version": e.to_version, "event_id": e.event_id}
            for e in events
        ],
        "aliases": runtime.models.snapshot.versions(),
        "recorded_in_warehouse": recorded,
        "warning": warning,
    }
