"""Use cases of the run subsystem (tasks, nearby search, runs), split by what they act on."""

from __future__ import annotations

from run.service._context import RunContext, parse_id, verify_config_from
from run.service._runs import MAX_ACTIVE_RUNS, MAX_POINTS_PER_RUN, RunService, event_id_of
from run.service._tasks import MAX_NEARBY_LIMIT, MAX_NEARBY_RADIUS_M, TaskService

__all__ = [
    "MAX_ACTIVE_RUNS",
    "MAX_NEARBY_LIMIT",
    "MAX_NEARBY_RADIUS_M",
    "MAX_POINTS_PER_RUN",
    "RunContext",
    "RunService",
    "TaskService",
    "event_id_of",
    "parse_id",
    "verify_config_from",
]
