"""`onevision quickstart` end to end on the tiny world, services and streaming included."""

import json

import pandas as pd
import requests
from typer.testing import CliRunner

from infra import services as svc
from infra.process import free_port
from infra.settings import load_settings
from onevision_cli.main import app
from serving.launch import stop_service
from streaming.launch import stop_workers
from training.launch import stop_dpo_job


def test_quickstart_tiny_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONEVISION_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ONEVISION_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("ONEVISION_REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")
    settings = load_settings()
    port = free_port()
    try:
        result = CliRunner().invoke(app, ["quickstart", "--preset", "tiny", "--port", str(port), "--sim-duration", "6",
                                          "--sim-rate", "3"])
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10)  # the service outlives the command
    finally:
        stopped = stop_service(settings) + stop_dpo_job(settings) + stop_workers(settings) + svc.down(settings)
    assert result.exit_code == 0, result.output
    for step in ("[1/7] world", "[2/7] ANN baselines", "[3/7] image encoder alignment and VRQ tokenizer",
                 "[4/7] generator", "[5/7] embedded services", "[6/7] streaming features", "[7/7] serving", "summary"):
        assert step in result.output
    assert page.status_code == 200 and "OneVision" in page.text
    assert f"web page: http://127.0.0.1:{port}/" in result.output
    assert "18 simulated searches (0 failed)" in result.output and "| onevision |" in result.output
    assert (tmp_path / "reports" / "ab.json").is_file() and (tmp_path / "reports" / "ab.png").is_file()
    searches = [line for line in result.output.splitlines() if " recent clicks) -> " in line]
    assert len(searches) == 3 and all(len(line.split("-> ")[1].split(", ")) == 4 for line in searches)
    generators = tmp_path / "data" / "registry" / "generator-vrq-tiny"
    assert (generators / "v0001" / "loss_dpo.png").is_file()
    served = json.loads((generators / "v0002" / "config.json").read_text())  # the pruned student serves
    assert (served["trained_by"] == "distill" and served["visual_keep"] == 3
            and "pruned to 3 of 17 visual tokens" in result.output)
    assert sorted(stopped) == ["dpo-stream", "kafka", "redis", "serving", "stream-features-0", "stream-sessions-0"]
    assert "near-streaming DPO job" in result.output and "DPO job so far (this run): " in result.output
    assert "| aligned | all |" in result.output and "| vrq |" in result.output
    assert (tmp_path / "reports" / "eval_ann_tiny.json").is_file()
    sids = pd.read_parquet(next((tmp_path / "data" / "registry" / "tokenizer-vrq-tiny")
                                .glob("v0001/item_sids.parquet")))
    assert {"item_id", "sid", "vector"} <= set(sids.columns)
    n_events = len(pd.read_parquet(tmp_path / "data" / "worlds" / "tiny" / "events.parquet"))
    assert f"replayed {n_events:,} events" in result.output and f": {n_events:,} events" in result.output
    assert "short-term SIDs [[" in result.output and "long-term SID [" in result.output
    n_versions = len(list(generators.glob("v0*")))
    again = CliRunner().invoke(app, ["quickstart", "--preset", "tiny", "--no-services"])
    assert again.exit_code == 0 and "already built, reused" in again.output and "reused" in again.output
    assert len(list(generators.glob("v0*"))) == n_versions  # the trained run and its student are reused
