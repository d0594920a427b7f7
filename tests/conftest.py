"""Shared fixtures: a tiny world built once per session, and real services on free ports."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from infra.process import free_port
from infra.settings import KafkaSettings, RedisSettings, Settings
from onevision.world.build import build_world
from onevision.world.config import preset


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The tiny preset built once (read-only for tests: copy it before changing anything)."""
    out = tmp_path_factory.mktemp("worlds") / "tiny"
    build_world(preset("tiny"), out, progress=False)
    return out


REDIS_PASSWORD = "s3cret:/@pw"  # characters a URL must escape, and Feast's connection string must not misread


def embedded_settings(state_dir: Path) -> Settings:
    """Settings for embedded services on free loopback ports with state under `state_dir`, set up
    the way production is: the broker named by a bootstrap list of two addresses (the same
    broker twice) and a Redis that requires a password, given in its URL."""
    kafka_port = free_port()
    return Settings(
        state_dir=state_dir,
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{kafka_port},localhost:{kafka_port}", partitions=3),
        redis=RedisSettings(url=f"redis://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{free_port()}/0"),
    )


@pytest.fixture(scope="session")
def services(tmp_path_factory) -> Settings:
    """A real Tansu broker and password-protected redis-server for the whole session, stopped at
    the end (and tied to this process, so that even an aborted test run leaves none behind)."""
    from infra import services as svc

    settings = embedded_settings(tmp_path_factory.mktemp("state"))
    svc.up(settings, tie_to_parent=True)
    yield settings
    svc.down(settings)


@pytest.fixture(scope="session")
def tiny_tokenizers(tiny_world, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(registry, cache, reports) holding the tiny world's aligned encoder and its VRQ and
    RQ-KMeans tokenizers, trained once per session through the CLI (read-only for tests)."""
    from typer.testing import CliRunner

    from onevision_cli.main import app

    root = tmp_path_factory.mktemp("tok")
    registry, cache, reports = root / "registry", root / "cache", root / "reports"
    result = CliRunner().invoke(app, ["tokenizer", "report", "--catalog", str(tiny_world), "--methods", "vrq,rq-kmeans",
                                      "--preset", "tiny", "--registry", str(registry), "--cache", str(cache),
                                      "--reports", str(reports)])
    assert result.exit_code == 0, result.output
    return registry, cache, reports


@pytest.fixture(scope="session")
def tiny_generator(tiny_world, tiny_tokenizers, tmp_path_factory):
    """(version, GeneratorData): the tiny world's generator after all four stages (read-only)."""
    from onevision.catalog.format import load_catalog
    from onevision.generator.data import load_generator_data
    from onevision.registry import resolve
    from training.configs import HINTS, IMAGE_SID, GeneratorRecipe
    from training.generator import train_generator

    registry, cache, _ = tiny_tokenizers
    catalog = load_catalog(tiny_world)
    tok = resolve(registry / "tokenizer-vrq-tiny")
    version, _ = train_generator(catalog, tok, registry, cache, tmp_path_factory.mktemp("runs"),
                                 GeneratorRecipe(preset="tiny"), progress=False)
    return version, load_generator_data(catalog, tok, cache, progress=False, image_sid=IMAGE_SID, hints=HINTS)


S3_ENV = {"AWS_ACCESS_KEY_ID": "onevision-test", "AWS_SECRET_ACCESS_KEY": "onevision-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-protocol server (moto's server mode) on a free port with a bucket `onevision`;
    the environment points boto and s3fs at it (`AWS_ENDPOINT_URL`) for this session and for the
    processes the tests start. Yields its endpoint URL."""
    import os
    import sys
    import time

    import boto3

    from infra.process import ManagedProcess, port_open

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = ManagedProcess(name="s3", state_dir=tmp_path_factory.mktemp("s3"), host="127.0.0.1", port=port,
                          argv=[sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                          healthy=lambda: port_open("127.0.0.1", port))
    proc.start(timeout=60, tie_to_parent=True)
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
    deadline = time.time() + 30
    while True:
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="onevision")
            break
        except Exception:  # noqa: BLE001 - the server is still starting
            if time.time() > deadline:
                raise
            time.sleep(0.3)
    yield endpoint
    proc.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
