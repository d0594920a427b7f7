"""`onevision quickstart` end to end on the tiny world, services and streaming included, and on a
real (grocery-like) catalog."""

import json

import pandas as pd
import requests
from typer.testing import CliRunner

from infra import services as svc
from infra.process import free_port
from infra.settings import load_settings
from onevision.catalog.format import load_catalog
from onevision_cli.main import app
from pipelines.quickstart import QuickstartConfig, quickstart
from serving.launch import stop_service
from streaming.launch import stop_workers
from tests.test_real_catalog import grocery_like_catalog
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
    assert "20 items launched, 2 removed, 10 repriced; applied by the service" in result.output
    assert "'s photo -> " in result.output  # a launched item searched by its photo
    n_versions = len(list(generators.glob("v0*")))
    again = CliRunner().invoke(app, ["quickstart", "--preset", "tiny", "--no-services"])
    assert again.exit_code == 0 and "already built, reused" in again.output and "reused" in again.output
    assert len(list(generators.glob("v0*"))) == n_versions  # the trained run and its student are reused


def test_quickstart_on_a_real_catalog_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """No world, no event log, no prices, only clicks: every step runs or says in one line why not."""
    root = grocery_like_catalog(tmp_path / "grocery")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONEVISION_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ONEVISION_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("ONEVISION_REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")
    settings = load_settings()
    port, url = free_port(), None
    photo = root / load_catalog(root).queries.query("split == 'test'")["image"].iloc[0]
    try:
        quickstart(QuickstartConfig(catalog=root, preset="tiny", registry=tmp_path / "registry", port=port,
                                    sim_duration=4, sim_rate=3))
        url = f"http://127.0.0.1:{port}"
        page = requests.get(f"{url}/", timeout=10)
        found = requests.post(f"{url}/v1/search", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
                              data={"user_id": "anonymous", "top_k": "4"}, timeout=60)
    finally:
        stopped = stop_service(settings) + stop_dpo_job(settings) + stop_workers(settings) + svc.down(settings)
    out = capsys.readouterr().out
    assert page.status_code == 200 and "OneVision" in page.text
    assert found.status_code == 200 and {h["item_id"] for h in found.json()["items"]} <= {f"g{i:03d}" for i in range(6)}
    assert len(found.json()["items"]) == 4
    assert "[1/7] catalog: " in out and "6 items in 3 categories" in out and "prices unknown" in out
    assert not (tmp_path / "data" / "worlds").exists()
    searches = [line for line in out.splitlines() if " recent clicks) -> " in line]
    assert len(searches) == 3 and all(line.lstrip().startswith("test-") for line in searches)
    assert "no event log: nothing to replay; features start empty" in out
    assert "catalog changes: onevision catalog publish" in out
    assert "12 simulated searches (0 failed)" in out and "simulated shoppers (assumed, not a world): 8 users" in out
    assert "near-streaming DPO job" in out and "DPO job so far (this run): " in out  # gated on val CLICKs
    assert f"web page: http://127.0.0.1:{port}/" in out
    assert sorted(stopped) == ["dpo-stream", "kafka", "redis", "serving", "stream-features-0", "stream-sessions-0"]


def test_unknown_training_lengths_are_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["quickstart", "--preset", "tiny", "--training", "huge", "--no-services"])
    assert result.exit_code != 0 and "--training huge: choose one of tiny, quick, small" in result.output
    assert not (tmp_path / "data").exists()  # no world was built
