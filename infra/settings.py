"""Connection settings from one place: defaults < YAML file < environment variables.

Production points the same code at a real Kafka cluster and Redis by setting
`ONEVISION_KAFKA__BOOTSTRAP_SERVERS` and `ONEVISION_REDIS__URL` (or a YAML file named by
`ONEVISION_CONFIG`); development uses the embedded services that `onevision infra up`
starts on loopback with state under `ONEVISION_STATE_DIR` (default `./.onevision`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

if TYPE_CHECKING:
    import redis

DEFAULT_CONFIG = Path(__file__).parent / "config" / "onevision.yaml"
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:19092"
    embedded: bool = Field(True, description="start the embedded Tansu broker (false: use an external cluster)")
    events_topic: str = "onevision.events"
    dlq_topic: str = "onevision.events.dlq"
    sessions_topic: str = "onevision.sessions"
    requests_topic: str = Field("onevision.requests", description="request contexts serving logs for the DPO job")
    catalog_topic: str = Field("onevision.catalog", description="catalog changes (one partition: one order for all "
                                                                "consumers; read from its start, never compacted)")
    partitions: int = Field(4, ge=1, description="partitions of each topic `ensure_topics` creates")
    replication_factor: int = Field(1, ge=1, description="replicas of each topic `ensure_topics` creates")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="the client certificate's private key")

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaSettings:
        """Refuse half-configured security here, not as an opaque handshake failure in every client."""
        if not self.servers:
            raise ValueError("kafka.bootstrap_servers names no broker")
        for s in self.servers:
            host, _, port = s.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"kafka.bootstrap_servers entry {s!r} is not host:port")
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(f"kafka.security_protocol {self.security_protocol} needs kafka.sasl_mechanism, "
                             f"kafka.sasl_username and kafka.sasl_password")
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ValueError(f"kafka.sasl_* settings are given but kafka.security_protocol is {self.security_protocol} "
                             f"(use SASL_PLAINTEXT or SASL_SSL)")
        ssl_files = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile}
        given = [name for name, path in ssl_files.items() if path is not None]
        if given and not self.security_protocol.endswith("SSL"):
            raise ValueError(f"kafka.{', kafka.'.join(given)} given but kafka.security_protocol is "
                             f"{self.security_protocol} (use SSL or SASL_SSL)")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("kafka.ssl_keyfile needs kafka.ssl_certfile")
        return self

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

    def client_options(self) -> dict[str, Any]:
        """The kafka-python keyword arguments every producer, consumer and admin client starts from:
        the whole bootstrap list and the security settings (the only place the SASL password is revealed)."""
        options: dict[str, Any] = {"bootstrap_servers": self.servers, "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password.get_secret_value() if self.sasl_password else None)
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None:
                options[name] = str(path)
        return options


class RedisSettings(BaseModel):
    """Where Redis is and how to log in. A password written into `url` is moved into `password`
    (and out of `url`) as the settings are read, so that no repr, dump or log line carries it;
    `ONEVISION_REDIS__PASSWORD` sets it without touching the URL and wins over one in the URL."""

    url: str = "redis://127.0.0.1:16379/0"
    password: SecretStr | None = Field(None, description="AUTH password (rediss:// for TLS)")
    embedded: bool = Field(True, description="start an embedded redis-server (false: use an external Redis)")

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        from redis.connection import parse_url

        url = data["url"]
        try:
            found = parse_url(url).get("password")
        except ValueError as e:  # redis-py's message names the schemes it accepts, not the URL
            raise ValueError(f"redis.url is not a redis://, rediss:// or unix:// URL: {e}") from None
        if not found:
            return data
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        parts = urlsplit(url)  # the password may sit in the userinfo or in a ?password= query
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]  # still percent-encoded, as it came
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
        stripped = urlunsplit((parts.scheme, f"{user + '@' if user else ''}{host}", parts.path, query, parts.fragment))
        return {**data, "url": stripped, "password": data.get("password") or found}

    @model_validator(mode="after")
    def _embedded_speaks_no_tls(self) -> RedisSettings:
        if self.embedded and self.ssl:
            raise ValueError(f"redis.url {self.safe_url} asks for TLS, which the embedded redis-server does not "
                             f"speak; set redis.embedded to false for an external Redis")
        return self

    def _parts(self) -> dict:
        """The URL as redis-py reads it (user, host, port, db, TLS for rediss://)."""
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
    def ssl(self) -> bool:
        return self._parts()["ssl"]

    @property
    def safe_url(self) -> str:
        """The URL without its credentials, for logs and messages."""
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def redis_client(settings: RedisSettings, **options: Any) -> redis.Redis:
    """A redis-py client on `settings` with its credentials (and TLS for rediss://); `options`
    are redis-py's own (socket_timeout, ...)."""
    import redis

    password = settings.password.get_secret_value() if settings.password else None
    return redis.Redis.from_url(settings.url, password=password, **options)


class ApiSettings(BaseModel):
    """The service's doors: who may write events and read shoppers' data, and how often anyone may call.

    Unset secrets keep the doors shut: without `api_key` no order and no `/v1/users` read is
    accepted; without `feedback_secret` each process draws its own (tokens then verify only
    on the replica that signed them; set it for more than one ingress replica)."""

    api_key: SecretStr | None = Field(None, description="X-API-Key of trusted server-to-server callers")
    feedback_secret: SecretStr | None = Field(None, description="HMAC key of the feedback tokens in search answers")
    feedback_ttl_s: int = Field(1800, ge=1, description="how long a search answer's feedback token is valid")
    rate_limit: str = Field("120/minute", description="per-client limit on searches and events (limits syntax)")
    read_rate_limit: str = Field("1200/minute", description="per-client limit on the other public endpoints")


class ServeSettings(BaseModel):
    """Where the service listens and what it serves. Catalog and registry are paths on one machine,
    or URLs every node of a Ray cluster reads (`s3://bucket/registry`; the store's own credentials
    come from its environment, e.g. `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`)."""

    host: str = Field("127.0.0.1", description="address Serve's HTTP proxies bind (0.0.0.0 on a cluster)")
    port: int = Field(8000, ge=1, le=65535, description="Serve's HTTP port on every node")
    catalog: str = Field("data/worlds/small", description="the served catalog: a path or a URL")
    registry: str = Field("data/registry", description="the model registry replicas follow: a path or a URL")
    ray_address: str | None = Field(None, description="an existing Ray cluster (host:port); none: a local Ray")


class Settings(BaseSettings):
    """All connection settings of a OneVision deployment."""

    model_config = SettingsConfigDict(env_prefix="ONEVISION_", env_nested_delimiter="__", extra="ignore")

    state_dir: Path = Path(".onevision")
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    api: ApiSettings = ApiSettings()
    serve: ServeSettings = ServeSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("ONEVISION_CONFIG", str(DEFAULT_CONFIG))
        if not Path(yaml_file).is_file():
            raise FileNotFoundError(f"ONEVISION_CONFIG names {yaml_file}, which does not exist")
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file)

    def private_dump(self) -> dict[str, Any]:
        """`model_dump(mode="json")` with the secrets revealed: what a child process or a Serve
        deployment rebuilds these settings from (the plain dump masks them, and the child would
        then log in with '**********')."""

        def reveal(value: Any) -> Any:
            if isinstance(value, SecretStr):
                return value.get_secret_value()
            if isinstance(value, dict):
                return {k: reveal(v) for k, v in value.items()}
            return value

        dump = to_jsonable_python(reveal(self.model_dump()))
        dump["state_dir"] = str(self.resolved_state_dir())
        return dump

    def to_env(self) -> dict[str, str]:
        """These settings (every field, secrets revealed) as the environment variables a child
        process reads them from; unset optional fields are left out, so the child's default holds."""
        env: dict[str, str] = {}

        def flatten(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    flatten(f"{prefix}__{k.upper()}", v)
            elif value is not None:
                env[prefix] = json.dumps(value) if isinstance(value, list) else str(value)

        for name, value in self.private_dump().items():
            flatten(f"ONEVISION_{name.upper()}", value)
        return env

    def resolved_state_dir(self) -> Path:
        return self.state_dir.expanduser().resolve()


def load_settings(**overrides) -> Settings:
    """Settings from defaults, the YAML file, the environment and explicit overrides (highest)."""
    return Settings(**overrides)
