"""Settings: read from the environment once, when an app or command is built (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# Development-only secret: accepted in `dev`/`test`, refused everywhere else.
DEV_SECRET = "picool-dev-secret-do-not-use-in-production-0000"


class SettingsError(ValueError):
    """Raised when the environment holds an invalid or unsafe configuration."""


def _parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}: expected a boolean, got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable about Picool. Environment variable = ``PICOOL_`` + upper-case field name."""

    env: str = "dev"
    database_url: str = ""
    redis_url: str = ""
    kafka_bootstrap: str = ""
    kafka_topic_prefix: str = "picool."
    kafka_partitions: int = 8
    data_dir: str = ".picool"
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    secret_key: str = DEV_SECRET
    issuer: str = ""
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 86400
    refresh_token_max_s: int = 90 * 86400
    auth_code_ttl_s: int = 60
    runner_app_redirect_uris: str = "picool://oauth/callback,http://127.0.0.1:8000/oauth/callback"
    merchant_portal_redirect_uris: str = "http://127.0.0.1:8000/portal/callback,http://localhost:8000/portal/callback"
    cors_origins: str = "http://127.0.0.1:8000,http://localhost:8000"
    # The merchant portal's map: an XYZ raster tile URL template ("https://tiles.example/{z}/{x}/{y}.png",
    # optional {s} for a/b/c), empty for none (the map draws a plain grid); its attribution; the centre
    # shown before the merchant has any task ("LAT,LON").
    portal_tile_url: str = ""
    portal_tile_attribution: str = ""
    portal_map_center: str = "31.2304,121.4737"
    db_pool_size: int = 10
    db_max_overflow: int = 10
    outbox_poll_ms: int = 200
    outbox_batch: int = 500
    log_level: str = "INFO"
    log_format: str = "auto"  # json | text | auto (text in dev, json elsewhere)
    workers_enabled: bool = True  # background work in this process: the outbox relay, and (below) the rest
    # Kafka consumers and periodic jobs (with workers_enabled). `picool serve --no-consumers` turns them off
    # in processes that only serve HTTP, and `picool work` runs them apart (a split deployment).
    consumers_enabled: bool = True
    # "group:ip=N/SECONDS,user=N/SECONDS;group2:..." (see gateway/edge.py for the groups)
    rate_limits: str = "default:ip=1200/60,user=600/60;auth:ip=60/60"
    # Coupon claims (template and flash): "N/SECONDS" per client IP and per runner; "" turns one off.
    claim_rate_ip: str = "10/300"
    claim_rate_user: str = "30/60"
    request_timeout_s: int = 30
    upstream_retries: int = 2  # extra attempts for idempotent requests when the connection is refused
    upstream_timeout_s: float = 25.0  # split deployment: how long the gateway waits for a subsystem
    max_body_bytes: int = 1_048_576
    trusted_proxies: str = ""  # CSV of peer IPs whose X-Forwarded-For is believed
    node_id: int = -1
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``PICOOL_*`` variables (``environ`` defaults to ``os.environ``), then ``overrides``.

        Raises :class:`SettingsError` for malformed values and for development secrets outside dev/test.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        extra: dict[str, str] = {}
        known = {f.name: f for f in fields(cls)}
        for key, raw in env.items():
            if not key.startswith("PICOOL_"):
                continue
            name = key[len("PICOOL_") :].lower()
            f = known.get(name)
            if f is None or name == "extra":
                extra[name] = raw
                continue
            default = f.default
            if isinstance(default, bool):
                values[name] = _parse_bool(key, raw)
            elif isinstance(default, int):
                try:
                    values[name] = int(raw)
                except ValueError as exc:
                    raise SettingsError(f"{key}: expected an integer, got {raw!r}") from exc
            elif isinstance(default, float):
                try:
                    values[name] = float(raw)
                except ValueError as exc:
                    raise SettingsError(f"{key}: expected a number, got {raw!r}") from exc
            else:
                values[name] = raw
        values["extra"] = extra
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def with_(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied and validated."""
        new = replace(self, **changes)
        new.validate()
        return new

    @property
    def is_dev(self) -> bool:
        """True in development and test environments, where embedded servers and dev secrets are allowed."""
        return self.env in {"dev", "test"}

    @property
    def log_json(self) -> bool:
        """Whether logs are JSON lines (``log_format``; ``auto`` means JSON outside dev)."""
        return self.log_format == "json" or (self.log_format == "auto" and not self.is_dev)

    @property
    def data_path(self) -> Path:
        """The data directory as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    @property
    def base_url(self) -> str:
        """The public base URL of the gateway (no trailing slash)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def token_issuer(self) -> str:
        """The ``iss`` of every access token."""
        return self.issuer or self.base_url

    def topic(self, name: str) -> str:
        """The full Kafka topic name for a logical topic."""
        return f"{self.kafka_topic_prefix}{name}"

    def csv(self, value: str) -> list[str]:
        """Split a comma-separated setting into its non-empty parts."""
        return [p.strip() for p in value.split(",") if p.strip()]

    def validate(self) -> None:
        """Refuse unsafe or impossible combinations."""
        if self.env not in {"dev", "test", "staging", "prod"}:
            raise SettingsError(f"PICOOL_ENV must be dev, test, staging or prod, got {self.env!r}")
        if not self.is_dev:
            if self.secret_key == DEV_SECRET or len(self.secret_key) < 32:
                raise SettingsError(
                    "PICOOL_SECRET_KEY must be set to a random value of at least 32 characters outside dev"
                )
            for name in ("database_url", "redis_url", "kafka_bootstrap"):
                if not getattr(self, name):
                    raise SettingsError(f"PICOOL_{name.upper()} is required outside dev")
        if not (0 < self.port < 65536):
            raise SettingsError(f"PICOOL_PORT out of range: {self.port}")
        if self.access_token_ttl_s < 30 or self.access_token_ttl_s > 3600:
            raise SettingsError("PICOOL_ACCESS_TOKEN_TTL_S must be between 30 and 3600 seconds")
        if self.refresh_token_ttl_s > self.refresh_token_max_s:
            raise SettingsError("PICOOL_REFRESH_TOKEN_TTL_S must not exceed PICOOL_REFRESH_TOKEN_MAX_S")
        if self.kafka_partitions < 1:
            raise SettingsError("PICOOL_KAFKA_PARTITIONS must be at least 1")
        if self.portal_tile_url and not (
            self.portal_tile_url.startswith(("http://", "https://", "/"))
            and all(p in self.portal_tile_url for p in ("{z}", "{x}", "{y}"))
        ):
            raise SettingsError("PICOOL_PORTAL_TILE_URL must be an http(s) URL template with {z}, {x} and {y}")
        try:
            _ = self.map_center
        except ValueError as exc:
            raise SettingsError(f"PICOOL_PORTAL_MAP_CENTER must be 'LAT,LON' in degrees: {exc}") from exc

    @property
    def map_center(self) -> tuple[float, float]:
        """``portal_map_center`` as (lat, lon); ValueError when malformed or out of range."""
        lat_s, sep, lon_s = self.portal_map_center.partition(",")
        if not sep:
            raise ValueError("expected LAT,LON")
        lat, lon = float(lat_s), float(lon_s)
        if not (-85.0 <= lat <= 85.0 and -180.0 <= lon <= 180.0):
            raise ValueError("latitude must be within +-85, longitude within +-180")
        return lat, lon

    @property
    def uses_embedded(self) -> bool:
        """True when at least one server URL is missing and embedded servers must be started."""
        return not (self.database_url and self.redis_url and self.kafka_bootstrap)
