"""Training and batch-scoring jobs (separate processes; state survives restarts)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from sparkpipe.serving.job_requests import prepare_batch, prepare_train
from sparkpipe.serving.jobs import JobManager
from sparkpipe.serving.schemas import (
    ApiError,
    BatchPredictRequest,
    ErrorResponse,
    JobAccepted,
    JobInfo,
    JobList,
    TrainRequest,
    dumps,
    json_body_doc,
    parse_json,
    validate_model,
)
from sparkpipe.serving.security import ApiKeyDep, PathScrubber
from sparkpipe.serving.service import ServiceDep
from sparkpipe.serving.settings import SettingsDep

router = APIRouter(tags=["jobs"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorResponse} for c in (400, 401, 403, 404, 409, 413, 415, 422)
}


def get_jobs(request: Request) -> JobManager:
    """FastAPI dependency: the application's :class:`~sparkpipe.serving.jobs.JobManager`."""
    return request.app.state.jobs


JobsDep = Annotated[JobManager, Depends(get_jobs)]


def _accepted(state: dict[str, Any]) -> Response:
    url = f"/jobs/{state['id']}"
    return Response(
        dumps({"id": state["id"], "status": state["status"], "url": url}),
        status_code=202,
        media_type="application/json",
        headers={"Location": url},
    )


@router.post(
    "/train",
    status_code=202,
    dependencies=[ApiKeyDep],
    summary="Train in a separate process",
    responses={202: {"model": JobAccepted}, **_ERRORS},
    openapi_extra=json_body_doc(TrainRequest),
)
async def train(request: Request, settings: SettingsDep, jobs: JobsDep) -> Response:
    req = validate_model(TrainRequest, parse_json(await request.body(), request.headers.get("content-type")))
    params, payload = await run_in_threadpool(prepare_train, req, settings)
    return _accepted(await run_in_threadpool(jobs.submit, "train", params, payload))


@router.post(
    "/predict/batch",
    status_code=202,
    dependencies=[ApiKeyDep],
    summary="Score a data set with Spark",
    responses={202: {"model": JobAccepted}, **_ERRORS},
    openapi_extra=json_body_doc(BatchPredictRequest),
)
async def predict_batch(
    request: Request, settings: SettingsDep, jobs: JobsDep, service: ServiceDep
) -> Response:
    req = validate_model(
        BatchPredictRequest, parse_json(await request.body(), request.headers.get("content-type"))
    )
    params, payload = await run_in_threadpool(prepare_batch, req, settings, service)
    return _accepted(await run_in_threadpool(jobs.submit, "batch_predict", params, payload))


@router.get(
    "/jobs",
    summary="Jobs, newest first, and state files that were skipped as invalid",
    responses={200: {"model": JobList}, 422: {"model": ErrorResponse}},
)
def list_jobs(
    jobs: JobsDep,
    settings: SettingsDep,
    status: Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    listed = jobs.list(status, limit)
    skipped = [{"file": f, "problem": p} for f, p in sorted(jobs.skipped.items())]
    body = PathScrubber(settings).obj({"jobs": listed, "skipped": skipped})
    return Response(dumps(body), media_type="application/json")


@router.get(
    "/jobs/{job_id}",
    summary="One job's state",
    responses={200: {"model": JobInfo}, 404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def get_job(
    job_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9\-]+$", max_length=100)],
    jobs: JobsDep,
    settings: SettingsDep,
) -> Response:
    state = jobs.get(job_id)
    if state is None:
        problem = jobs.problem(job_id)
        if problem:
            raise ApiError(
                404,
                f"job {job_id!r} has an invalid state file ({problem}); it is skipped",
                [("job_id", "invalid")],
            )
        raise ApiError(404, f"unknown job {job_id!r}", [("job_id", "no such job")])
    return Response(dumps(PathScrubber(settings).obj(state)), media_type="application/json")
