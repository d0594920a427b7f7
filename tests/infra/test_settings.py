import pytest

from infra.settings import load_settings


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
