"""HTTP endpoints of the run subsystem (thin: parse, call the service, return a schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from sqlalchemy.ext.asyncio import AsyncSession

from picool.errors import InvalidRequest
from picool.kernel import Kernel
from picool.tokens import Identity
from run import schemas, service

T = TypeVar("T")
TASKS_SERVICE = "run.tasks"
RUNS_SERVICE = "run.runs"

PageLimit = Annotated[int, QueryParameter(ge=1, le=100, description="Items per page (1-100).")]


def _tasks(kernel: Kernel) -> service.TaskService:
    svc: service.TaskService = kernel.services[TASKS_SERVICE]
    return svc


def _runs(kernel: Kernel) -> service.RunService:
    svc: service.RunService = kernel.services[RUNS_SERVICE]
    return svc


async def strict_body(request: Request[Any, Any, Any], type_: type[T]) -> T:
    """The request's JSON body decoded strictly as ``type_``.

    litestar converts the body laxly (``"31.2"`` becomes 31.2, ``"true"`` becomes True); the API takes
    numbers as numbers, so bodies are decoded once more, strictly, from the bytes litestar cached. The
    ``data`` parameters of the handlers stay for the OpenAPI document and the first, lax check.
    """
    try:
        return msgspec.json.decode(await request.body(), type=type_)
    except msgspec.ValidationError as exc:
        path = str(exc).rpartition(" - at `")[2].rstrip("`") if " - at `" in str(exc) else "body"
        raise InvalidRequest(str(exc), errors=[{"key": path, "message": str(exc), "source": "body"}]) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from exc


class TaskController(Controller):
    """Tasks: merchants create and steer them; every signed-in user reads and searches them."""

    path = "/api/v1/run/tasks"
    tags = ("run",)
    security = ({"bearer": []},)

    @post("/", status_code=HTTP_201_CREATED)
    async def create_task(
        self,
        *,
        request: Request[Any, Any, Any],
        data: JSONBody[schemas.TaskCreate],
        identity: Identity,
        db_session: AsyncSession,
        kernel: Kernel,
    ) -> schemas.Task:
        """Create a task for the caller's merchant (merchant accounts only)."""
        body = await strict_body(request, schemas.TaskCreate)
        return await _tasks(kernel).create(db_session, identity, body)

    @get("/")
    async def list_my_tasks(
        self,
        *,
        identity: Identity,
        db_session: AsyncSession,
        kernel: Kernel,
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 20,
    ) -> schemas.TaskList:
        """The caller's merchant's tasks, newest first (merchant accounts only)."""
        return await _tasks(kernel).list_mine(db_session, identity, cursor, limit)

    @get("/nearby")
    async def nearby(
        self,
        *,
        identity: Identity,
        kernel: Kernel,
        lat: Annotated[float, QueryParameter(ge=-90, le=90)],
        lon: Annotated[float, QueryParameter(ge=-180, le=180)],
        radius_m: Annotated[float, QueryParameter(gt=0, le=service.MAX_NEARBY_RADIUS_M)] = 3000.0,
        limit: Annotated[int, QueryParameter(ge=1, le=service.MAX_NEARBY_LIMIT)] = 20,
    ) -> schemas.NearbyTasks:
        """Available tasks within ``radius_m`` of (lat, lon), nearest first."""
        items = await _tasks(kernel).nearby(lat, lon, radius_m, limit)
        return schemas.NearbyTasks(items=items)

    @get("/{task_id:str}")
    async def get_task(self, task_id: FromPath[str], identity: Identity, kernel: Kernel) -> schemas.Task:
        """One task."""
        return await _tasks(kernel).get(service.parse_id(task_id, "task"))

    @patch("/{task_id:str}", status_code=HTTP_200_OK)
    async def update_task(
        self,
        *,
        request: Request[Any, Any, Any],
        task_id: FromPath[str],
        data: JSONBody[schemas.TaskUpdate],
        identity: Identity,
        db_session: AsyncSession,
        kernel: Kernel,
    ) -> schemas.Task:
        """Pause, resume or end a task (its merchant, or an operator)."""
        body = await strict_body(request, schemas.TaskUpdate)
        return await _tasks(kernel).set_status(db_session, identity, service.parse_id(task_id, "task"), body.status)

    @get("/{task_id:str}/runs")
    async def task_runs(
        self,
        *,
        task_id: FromPath[str],
        identity: Identity,
        db_session: AsyncSession,
        kernel: Kernel,
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 20,
    ) -> schemas.RunList:
        """The task's runs, newest first (the task's merchant or an operator)."""
        return await _runs(kernel).list_for_task(db_session, identity, service.parse_id(task_id, "task"), cursor, limit)

    @post("/{task_id:str}/runs", status_code=HTTP_201_CREATED)
    async def accept_task(
        self, task_id: FromPath[str], identity: Identity, db_session: AsyncSession, kernel: Kernel
    ) -> schemas.Run:
        """Accept a task: start a run holding one of its quota slots (runner accounts only)."""
        return await _runs(kernel).accept(db_session, identity, service.parse_id(task_id, "task"))


class RunController(Controller):
    """Runs: the runner feeds points and finishes; the runner and the task's merchant read."""

    path = "/api/v1/run/runs"
    tags = ("run",)
    security = ({"bearer": []},)

    @get("/{run_id:str}")
    async def get_run(
        self, run_id: FromPath[str], identity: Identity, db_session: AsyncSession, kernel: Kernel
    ) -> schemas.Run:
        """One run."""
        return await _runs(kernel).get(db_session, identity, service.parse_id(run_id, "run"))

    @post("/{run_id:str}/points", status_code=HTTP_202_ACCEPTED)
    async def add_points(
        self,
        *,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        data: JSONBody[schemas.PointBatch],
        identity: Identity,
        db_session: AsyncSession,
        kernel: Kernel,
    ) -> schemas.PointsAccepted:
        """Append a batch of GPS points to the caller's active run."""
        body = await strict_body(request, schemas.PointBatch)
        return await _runs(kernel).add_points(db_session, identity, service.parse_id(run_id, "run"), body)

    @post("/{run_id:str}/finish", status_code=HTTP_200_OK)
    async def finish_run(
        self, run_id: FromPath[str], identity: Identity, db_session: AsyncSession, kernel: Kernel
    ) -> schemas.Run:
        """Verify and settle the caller's run (idempotent)."""
        return await _runs(kernel).finish(db_session, identity, service.parse_id(run_id, "run"))


class MeController(Controller):
    """The caller's own runs and statistics."""

    path = "/api/v1/run/me"
    tags = ("run",)
    security = ({"bearer": []},)

    @get("/runs")
    async def my_runs(
        self,
        *,
        identity: Identity,
        db_session: AsyncSession,
        kernel: Kernel,
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 20,
        status: FromQuery[Literal["active", "completed", "rejected", "expired"] | None] = None,
    ) -> schemas.RunList:
        """The caller's runs, newest first."""
        return await _runs(kernel).list_mine(db_session, identity, cursor, limit, status)

    @get("/stats")
    async def my_stats(self, identity: Identity, db_session: AsyncSession, kernel: Kernel) -> schemas.RunnerStats:
        """The caller's run counts and distances (total and this week)."""
        return await _runs(kernel).stats(db_session, identity)
