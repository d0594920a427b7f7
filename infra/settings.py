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
    def port(self) -> int:
        return int(self.bootstrap_servers.rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        return self.bootstrap_servers.rsplit(":", 1)[0]


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:16379/0"
    embedded: bool = Field(True, description="start an embedded redis-server (false: use an external Redis)")

    @property
    def host(self) -> str:
        return self.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    @property
    def db(self) -> int:
        rest = self.url.split("//", 1)[1]
        return int(rest.split("/", 1)[1] or 0) if "/" in rest else 0


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
