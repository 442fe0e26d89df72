"""Settings: read from the environment when asked, validated, dev secrets refused outside dev."""

from __future__ import annotations

import pytest

from picool.settings import DEV_SECRET, Settings, SettingsError

PROD = {
    "PICOOL_ENV": "prod",
    "PICOOL_DATABASE_URL": "postgresql://db/picool",
    "PICOOL_REDIS_URL": "redis://r:6379/0",
    "PICOOL_KAFKA_BOOTSTRAP": "k:9092",
    "PICOOL_SECRET_KEY": "x" * 40,
}


def test_reads_environment() -> None:
    s = Settings.from_env({"PICOOL_PORT": "9000", "PICOOL_WORKERS_ENABLED": "false", "PICOOL_UPSTREAM_RUN": "http://r"})
    assert s.port == 9000
    assert s.workers_enabled is False
    assert s.extra["upstream_run"] == "http://r"


def test_prod_refuses_dev_secret() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        Settings.from_env({**PROD, "PICOOL_SECRET_KEY": DEV_SECRET})
    assert Settings.from_env(PROD).env == "prod"


def test_prod_requires_servers() -> None:
    env = dict(PROD)
    del env["PICOOL_REDIS_URL"]
    with pytest.raises(SettingsError, match="REDIS_URL"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("key", "value"),
    [("PICOOL_PORT", "abc"), ("PICOOL_PORT", "70000"), ("PICOOL_ENV", "qa"), ("PICOOL_WORKERS_ENABLED", "maybe")],
)
def test_malformed_values(key: str, value: str) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({key: value})


def test_portal_map_settings() -> None:
    s = Settings.from_env(
        {
            "PICOOL_PORTAL_TILE_URL": "https://{s}.tiles.example/{z}/{x}/{y}.png",
            "PICOOL_PORTAL_MAP_CENTER": "-33.9,18.4",
        }
    )
    assert s.portal_tile_url.endswith("{y}.png") and s.map_center == (-33.9, 18.4)
    assert Settings.from_env({}).portal_tile_url == ""  # no tiles by default: the portal draws a grid
    for bad in ("https://tiles.example/tile.png", "ftp://t/{z}/{x}/{y}", "javascript:{z}{x}{y}"):
        with pytest.raises(SettingsError, match="TILE_URL"):
            Settings.from_env({"PICOOL_PORTAL_TILE_URL": bad})
    for bad in ("31.2", "north,east", "89,0", "0,181", "nan,0"):
        with pytest.raises(SettingsError, match="MAP_CENTER"):
            Settings.from_env({"PICOOL_PORTAL_MAP_CENTER": bad})
