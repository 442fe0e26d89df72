"""The coupon templates a task may reward, as coupon's public HTTP API describes them.

run never imports coupon nor reads its tables: it asks ``GET /api/v1/coupon/templates/{id}`` with a
service token (client_credentials). In one process the call goes through an in-process transport;
split over processes it goes over HTTP to ``PICOOL_UPSTREAM_COUPON``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx

from picool.errors import InvalidRequest, ServiceUnavailable
from picool.kernel import Kernel

log = logging.getLogger("run.templates")

TASK_REWARD = "task_reward"


class TemplateDirectory:
    """Checks that a coupon template may be a task's reward."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    async def check_reward_template(self, template_id: str, merchant_id: str) -> None:
        """Return if template ``template_id`` exists, is distributed as ``task_reward`` and belongs to
        ``merchant_id`` or to the platform.

        Raises a 400 problem ``unknown_reward_template`` when coupon does not know it,
        ``invalid_reward_template`` when it may not be this merchant's task reward, and a 503 problem
        ``coupon_unavailable`` when coupon cannot be asked.
        """
        template = await self._fetch(template_id)
        if template is None:
            raise InvalidRequest(f"Coupon template {template_id} does not exist.", code="unknown_reward_template")
        if template.get("distribution") != TASK_REWARD:
            raise InvalidRequest(
                f"Coupon template {template_id} is not distributed as {TASK_REWARD}.",
                code="invalid_reward_template",
            )
        owner = template.get("merchant_id")
        if owner is not None and str(owner) != merchant_id:
            raise InvalidRequest(
                f"Coupon template {template_id} belongs to another merchant.", code="invalid_reward_template"
            )

    async def _fetch(self, template_id: str) -> dict[str, Any] | None:
        try:
            token = await self.kernel.service_token()
            resp = await self.kernel.http_client("coupon").get(
                f"/api/v1/coupon/templates/{quote(template_id, safe='')}",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
        except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as exc:
            log.warning("coupon template lookup failed", exc_info=True)
            raise _unavailable() from exc
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            log.warning("coupon template lookup answered %s: %s", resp.status_code, resp.text[:200])
            raise _unavailable()
        try:
            body = resp.json()
        except ValueError as exc:
            raise _unavailable() from exc
        if not isinstance(body, dict):
            raise _unavailable()
        return body


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The coupon service cannot confirm the reward template right now; try again shortly.",
        code="coupon_unavailable",
    )
