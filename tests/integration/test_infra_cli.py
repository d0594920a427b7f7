"""`onevision infra up | status | down` as a user runs it: nothing is left behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.process import free_port, pid_alive, port_open

pytestmark = pytest.mark.integration


def _cli(env, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", "onevision_cli.main", "infra", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_up_status_down_leaves_no_process(tmp_path):
    kafka_port, redis_port = free_port(), free_port()
    env = {**os.environ, "ONEVISION_STATE_DIR": str(tmp_path / "state"),
           "ONEVISION_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
           "ONEVISION_REDIS__URL": f"redis://127.0.0.1:{redis_port}/0"}
    try:
        up = _cli(env, "up")
        assert up.stdout.count("healthy") == 2
        again = _cli(env, "up")  # idempotent: adopts the running services
        status = json.loads(_cli(env, "status", "--json").stdout)
        assert [s["name"] for s in status] == ["kafka", "redis"]
        assert all(s["healthy"] for s in status)
        pids = [s["pid"] for s in status]
        assert all(pid_alive(p) for p in pids) and "healthy" in again.stdout
        assert (tmp_path / "state" / "redis" / "data").is_dir()
    finally:
        down = _cli(env, "down")
    assert "kafka" in down.stdout and "redis" in down.stdout
    assert not any(pid_alive(p) for p in pids)
    assert not port_open("127.0.0.1", kafka_port) and not port_open("127.0.0.1", redis_port)
    stopped = _cli(env, "status", check=False)
    assert stopped.returncode == 1 and stopped.stdout.count("stopped") == 2


def test_port_taken_by_someone_else_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**os.environ, "ONEVISION_STATE_DIR": str(tmp_path / "state"),
               "ONEVISION_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
               "ONEVISION_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0"}
        res = _cli(env, "up", check=False)
        _cli(env, "down")
    assert res.returncode == 2
    assert f"port 127.0.0.1:{port} is already taken" in res.stderr
    assert "Traceback" not in res.stderr


def test_services_tied_to_a_process_die_when_it_is_killed(tmp_path):
    """What the test fixture relies on: an aborted session leaves no broker or Redis behind."""
    import signal
    import time

    script = (
        "import sys, time\n"
        "from infra import services\n"
        "from tests.conftest import embedded_settings\n"
        "from pathlib import Path\n"
        "s = embedded_settings(Path(sys.argv[1]))\n"
        "rows = services.up(s, tie_to_parent=True)\n"
        "print(' '.join(str(r['pid']) for r in rows), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids)


def test_up_against_external_services_named_by_a_broker_list_and_a_password(services, tmp_path):
    """An external cluster may be named by several brokers of which the first is down, and an
    external Redis may want a password: `up` and `status` check them as their clients would."""
    dead = free_port()
    env = {**os.environ, "ONEVISION_STATE_DIR": str(tmp_path / "state"),
           "ONEVISION_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{dead},{services.kafka.servers[0]}",
           "ONEVISION_KAFKA__EMBEDDED": "false", "ONEVISION_REDIS__URL": services.redis.url,
           "ONEVISION_REDIS__PASSWORD": services.redis.password.get_secret_value(),
           "ONEVISION_REDIS__EMBEDDED": "false"}
    up = _cli(env, "up")
    assert up.stdout.count("healthy") == 2
    status = json.loads(_cli(env, "status", "--json").stdout)
    assert all(s["healthy"] and not s["embedded"] for s in status)
    assert status[0]["address"] == env["ONEVISION_KAFKA__BOOTSTRAP_SERVERS"]
    env["ONEVISION_REDIS__PASSWORD"] = "wrong"
    res = _cli(env, "up", check=False)
    assert res.returncode == 2 and f"external redis at {services.redis.safe_url} is not reachable" in res.stderr
    assert "wrong" not in res.stderr and "Traceback" not in res.stderr


def test_the_embedded_redis_requires_any_password_but_keeps_it_off_its_command_line(tmp_path):
    """The password reaches redis-server through a 0600 config file (a command line is world-readable
    in /proc), escaped so that quotes, backslashes, spaces and UTF-8 survive; an ACL user too."""
    import redis

    from infra import services as svc
    from infra.settings import RedisSettings, Settings, redis_client

    password = 'a "quoted" \\ pass wörd'
    r = RedisSettings(url=f"redis://ops@127.0.0.1:{free_port()}/0", password=password)
    proc = svc.redis_server(Settings(state_dir=tmp_path, redis=r))
    assert not any(password in a or "pass" in a for a in proc.argv)
    assert Path(proc.argv[1]).stat().st_mode & 0o077 == 0
    proc.start(tie_to_parent=True)
    try:
        with redis_client(r) as client:
            assert client.ping()
        with redis_client(r.model_copy(update={"password": None})) as client, pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        proc.stop()
