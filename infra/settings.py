"""Connection settings from one place: defaults < YAML file < environment variables.

Production points the same code at a real Kafka cluster and Redis by setting
`ONEVISION_KAFKA__BOOTSTRAP_SERVERS` and `ONEVISION_REDIS__URL` (or a YAML file named by
`ONEVISION_CONFIG`); development uses the embedded services that `onevision infra up`
starts on loopback with state under `ONEVISION_STATE_DIR` (default `./.onevision`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

DEFAULT_CONFIG = Path(__file__).parent / "config" / "onevision.yaml"


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:19092"
    embedded: bool = Field(True, description="start the embedded Tansu broker (false: use an external cluster)")
    events_topic: str = "onevision.events"
    dlq_topic: str = "onevision.events.dlq"
    sessions_topic: str = "onevision.sessions"
    partitions: int = 4

    @property
    def servers(self) -> list[str]:
        """The comma-separated bootstrap list as `host:port` entries."""
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    @property
    def port(self) -> int:
        """The first broker's port (where an embedded broker listens)."""
        return int(self.servers[0].rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        return self.servers[0].rsplit(":", 1)[0]


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:16379/0"
    embedded: bool = Field(True, description="start an embedded redis-server (false: use an external Redis)")

    def _parts(self) -> dict:
        """The URL as redis-py reads it (user, password, host, port, db, TLS for rediss://)."""
        from redis.connection import SSLConnection, parse_url

        parts = parse_url(self.url)
        return {**parts, "port": int(parts.get("port") or 6379), "db": int(parts.get("db") or 0),
                "ssl": parts.get("connection_class") is SSLConnection}

    @property
    def host(self) -> str:
        return self._parts().get("host") or "localhost"

    @property
    def port(self) -> int:
        return self._parts()["port"]

    @property
    def db(self) -> int:
        return self._parts()["db"]

    @property
    def username(self) -> str | None:
        return self._parts().get("username")

    @property
    def password(self) -> str | None:
        return self._parts().get("password")

    @property
    def ssl(self) -> bool:
        return self._parts()["ssl"]

    @property
    def safe_url(self) -> str:
        """The URL without its credentials, for logs and messages."""
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


class Settings(BaseSettings):
    """All connection settings of a OneVision deployment."""

    model_config = SettingsConfigDict(env_prefix="ONEVISION_", env_nested_delimiter="__", extra="ignore")

    state_dir: Path = Path(".onevision")
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("ONEVISION_CONFIG", str(DEFAULT_CONFIG))
        if not Path(yaml_file).is_file():
            raise FileNotFoundError(f"ONEVISION_CONFIG names {yaml_file}, which does not exist")
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file)

    def to_env(self) -> dict[str, str]:
        """These settings as the environment variables a child process reads them from."""
        k, r = self.kafka, self.redis
        return {"ONEVISION_STATE_DIR": str(self.resolved_state_dir()),
                "ONEVISION_KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers, "ONEVISION_KAFKA__EMBEDDED": str(k.embedded),
                "ONEVISION_KAFKA__EVENTS_TOPIC": k.events_topic, "ONEVISION_KAFKA__DLQ_TOPIC": k.dlq_topic,
                "ONEVISION_KAFKA__SESSIONS_TOPIC": k.sessions_topic, "ONEVISION_KAFKA__PARTITIONS": str(k.partitions),
                "ONEVISION_REDIS__URL": r.url, "ONEVISION_REDIS__EMBEDDED": str(r.embedded)}

    def resolved_state_dir(self) -> Path:
        return self.state_dir.expanduser().resolve()


def load_settings(**overrides) -> Settings:
    """Settings from defaults, the YAML file, the environment and explicit overrides (highest)."""
    return Settings(**overrides)
