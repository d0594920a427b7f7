"""The declarative repo works with Feast's own CLI, and the SQLite config is a working fallback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from features.client import REPO, feature_store, redis_connection_string, repo_config, user_features
from infra.process import ServiceError, free_port
from infra.settings import RedisSettings, Settings


def feast_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    feast = Path(sys.executable).parent / "feast"
    return subprocess.run([str(feast), *args], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


def test_feast_apply_from_the_repo_with_redis(services, tmp_path):
    env = {"ONEVISION_FEAST_DIR": str(tmp_path),
           "ONEVISION_FEAST_REDIS": redis_connection_string(services)}  # the session's Redis wants a password
    out = feast_cli("apply", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    listed = feast_cli("feature-views", "list", env=env)
    assert "user_behaviour" in listed.stdout and "item_stats" in listed.stdout


def test_feast_apply_with_the_sqlite_config(tmp_path):
    out = feast_cli("-f", "feature_store.sqlite.yaml", "apply", env={"ONEVISION_FEAST_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "registry.db").is_file()


def test_sqlite_fallback_when_redis_does_not_answer(tmp_path):
    settings = Settings(state_dir=tmp_path, redis=RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    assert repo_config(settings).online_store.type == "sqlite"
    store = feature_store(settings)
    store.write_to_online_store("user_behaviour", pd.DataFrame({
        "user_id": ["u1"], "short_sids": [["1-2-3"]], "long_sid": [[4, 5, 6]],
        "recent_sids": [["1-2-3", "7-0-1"]], "event_timestamp": [pd.Timestamp("2026-01-01", tz="UTC")]}))
    assert user_features(store, ["u1"]) == [{"user_id": "u1", "short_sids": [[1, 2, 3]], "long_sid": [4, 5, 6],
                                             "recent_sids": [[1, 2, 3], [7, 0, 1]]}]


def test_an_external_redis_that_does_not_answer_is_an_error_not_a_sqlite_fallback(tmp_path):
    """Only the laptop's embedded Redis may fall back to SQLite; a production store that silently
    wrote features to a local file would serve nobody."""
    port = free_port()
    settings = Settings(state_dir=tmp_path,
                        redis=RedisSettings(url=f"redis://:hush@127.0.0.1:{port}/0", embedded=False))
    with pytest.raises(ServiceError, match=f"redis://127.0.0.1:{port}/0") as err:
        repo_config(settings)
    assert "hush" not in str(err.value)
    assert repo_config(settings, backend="sqlite").online_store.type == "sqlite"  # asked for explicitly: fine
