from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.settings import ApiSettings, KafkaSettings, RedisSettings, Settings, load_settings, redis_client


def test_defaults_come_from_the_shipped_yaml(monkeypatch):
    monkeypatch.delenv("ONEVISION_CONFIG", raising=False)
    s = load_settings()
    assert s.kafka.events_topic == "onevision.events"
    assert s.kafka.port == 19092 and s.redis.port == 16379


def test_env_overrides_yaml_and_yaml_overrides_defaults(monkeypatch, tmp_path):
    cfg = tmp_path / "prod.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: kafka-0.internal:9092\n  embedded: false\nredis:\n  url: redis://cache:6379/2\n")
    monkeypatch.setenv("ONEVISION_CONFIG", str(cfg))
    s = load_settings()
    assert s.kafka.bootstrap_servers == "kafka-0.internal:9092" and not s.kafka.embedded
    assert s.redis.host == "cache" and s.redis.port == 6379
    monkeypatch.setenv("ONEVISION_REDIS__URL", "redis://other:7000/0")
    monkeypatch.setenv("ONEVISION_STATE_DIR", str(tmp_path / "state"))
    s = load_settings()
    assert s.redis.port == 7000 and s.resolved_state_dir() == tmp_path / "state"


def test_missing_config_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("ONEVISION_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        load_settings()


def test_a_redis_url_is_parsed_by_redis_py_and_its_password_never_shown(monkeypatch):
    """`redis://:secret@host:6380/2` once parsed its host as ':secret@host'."""
    from features.client import redis_connection_string

    monkeypatch.setenv("ONEVISION_REDIS__URL", "redis://:secret@cache.internal:6380/2")
    s = load_settings()
    assert (s.redis.host, s.redis.port, s.redis.db) == ("cache.internal", 6380, 2)
    assert s.redis.password.get_secret_value() == "secret"
    assert "secret" not in s.redis.safe_url and "cache.internal:6380/2" in s.redis.safe_url
    assert redis_connection_string(s) == 'cache.internal:6380,db=2,password="secret"'
    monkeypatch.setenv("ONEVISION_REDIS__URL", "rediss://ops:pw@cache/0")
    monkeypatch.setenv("ONEVISION_REDIS__EMBEDDED", "false")
    s = load_settings()
    assert (s.redis.host, s.redis.port, s.redis.ssl) == ("cache", 6379, True)
    assert redis_connection_string(s) == 'cache:6379,db=0,username="ops",password="pw",ssl=true'


def test_feast_reads_a_numeric_password_as_a_string_and_a_comma_is_refused(monkeypatch):
    """Feast JSON-decodes connection-string values: an unquoted `1234` would reach AUTH as an int."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    from features.client import redis_connection_string

    monkeypatch.setenv("ONEVISION_REDIS__URL", "redis://:1234@cache:6379/0")
    _, params = RedisOnlineStore._parse_connection_string(redis_connection_string(load_settings()))
    assert params["password"] == "1234"
    monkeypatch.setenv("ONEVISION_REDIS__URL", "redis://:a,b@cache:6379/0")
    with pytest.raises(ValueError, match="comma") as err:
        redis_connection_string(load_settings())
    assert "a,b" not in str(err.value)


def test_a_bootstrap_list_names_every_broker(monkeypatch):
    monkeypatch.setenv("ONEVISION_KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9092, kafka-1:9093")
    s = load_settings()
    assert s.kafka.servers == ["kafka-0:9092", "kafka-1:9093"]
    assert (s.kafka.host, s.kafka.port) == ("kafka-0", 9092)  # where an embedded broker would listen


def test_a_password_in_the_redis_url_is_moved_out_of_it(monkeypatch):
    """The URL is what repr, dumps and logs show; the password lives only in a SecretStr."""
    monkeypatch.setenv("ONEVISION_REDIS__URL", "redis://ops:p%40ss%2Fw0rd@cache:6380/1")
    s = load_settings()
    r = s.redis
    assert r.url == "redis://ops@cache:6380/1" and r.password.get_secret_value() == "p@ss/w0rd"
    assert (r.username, r.host, r.port, r.db) == ("ops", "cache", 6380, 1)
    for shown in (repr(s), str(s.model_dump()), s.model_dump_json(), r.safe_url, r.url):
        assert "p@ss" not in shown and "p%40ss" not in shown
    monkeypatch.setenv("ONEVISION_REDIS__PASSWORD", "from-env")  # the separate setting wins
    assert load_settings().redis.password.get_secret_value() == "from-env"
    monkeypatch.delenv("ONEVISION_REDIS__PASSWORD")
    monkeypatch.setenv("ONEVISION_REDIS__URL", "redis://cache:6380/1?password=qu3ry&socket_timeout=2")
    r = load_settings().redis  # redis-py also reads a password from the query
    assert r.url == "redis://cache:6380/1?socket_timeout=2" and r.password.get_secret_value() == "qu3ry"


def test_redis_client_logs_in_and_speaks_tls_for_rediss():
    from redis.connection import SSLConnection

    plain = redis_client(RedisSettings(url="redis://:pw@cache:6380/2"), socket_timeout=3)
    kw = plain.connection_pool.connection_kwargs
    assert (kw["password"], kw["host"], kw["port"], kw["db"], kw["socket_timeout"]) == ("pw", "cache", 6380, 2, 3)
    tls = redis_client(RedisSettings(url="rediss://cache/0", password="pw", embedded=False))
    assert tls.connection_pool.connection_class is SSLConnection
    assert tls.connection_pool.connection_kwargs["password"] == "pw"


def test_tls_to_the_embedded_redis_is_refused():
    with pytest.raises(ValidationError, match="embedded redis-server"):
        RedisSettings(url="rediss://127.0.0.1:16379/0")


def test_sasl_settings_become_kafka_python_options():
    k = KafkaSettings(bootstrap_servers="k0:9093, k1:9093", security_protocol="SASL_SSL",
                      sasl_mechanism="SCRAM-SHA-512", sasl_username="svc", sasl_password="hunter2",
                      ssl_cafile=Path("/etc/ca.pem"), replication_factor=3)
    assert k.client_options() == {
        "bootstrap_servers": ["k0:9093", "k1:9093"], "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc", "sasl_plain_password": "hunter2",
        "ssl_cafile": "/etc/ca.pem"}
    assert "hunter2" not in repr(k) and "hunter2" not in k.model_dump_json()
    assert KafkaSettings().client_options() == {"bootstrap_servers": ["127.0.0.1:19092"],
                                                "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("fields, message", [
    ({"security_protocol": "SASL_PLAINTEXT"}, "needs kafka.sasl_mechanism"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}, "kafka.sasl_password"),
    ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}, "use SASL_PLAINTEXT or SASL_SSL"),
    ({"ssl_cafile": "/ca.pem"}, "use SSL or SASL_SSL"),
    ({"security_protocol": "SSL", "ssl_keyfile": "/k.pem"}, "needs kafka.ssl_certfile"),
    ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ({"bootstrap_servers": "k0:9092,k1"}, "'k1' is not host:port"),
    ({"replication_factor": 0}, "replication_factor"),
])
def test_half_configured_kafka_security_is_a_clear_error(fields, message):
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**fields)


def test_children_get_every_setting_with_the_secrets_revealed(monkeypatch, tmp_path):
    """A worker or Serve replica rebuilt from `to_env` / `private_dump` logs in like its parent
    (the masked '**********' of a plain dump would not)."""
    s = load_settings(state_dir=tmp_path,
                      kafka=KafkaSettings(bootstrap_servers="k0:9092,k1:9092", security_protocol="SASL_PLAINTEXT",
                                          sasl_mechanism="PLAIN", sasl_username="svc", sasl_password="kpw",
                                          replication_factor=3, partitions=8),
                      redis=RedisSettings(url="redis://:rpw@cache:6379/3", embedded=False),
                      api=ApiSettings(api_key="key", feedback_secret="fsecret", feedback_ttl_s=60,
                                      rate_limit="5/second"))
    env = s.to_env()
    assert env["ONEVISION_KAFKA__SASL_PASSWORD"] == "kpw" and env["ONEVISION_REDIS__PASSWORD"] == "rpw"
    assert env["ONEVISION_API__API_KEY"] == "key" and env["ONEVISION_API__FEEDBACK_SECRET"] == "fsecret"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = load_settings()
    assert child == s
    assert child.kafka.client_options() == s.kafka.client_options()
    dump = s.private_dump()
    assert dump["redis"]["password"] == "rpw" and dump["api"]["api_key"] == "key"
    assert Settings.model_validate(dump) == s
    assert "rpw" not in str(s.model_dump(mode="json"))
