"""`onevision quickstart` end to end on the tiny world (services are covered by tests/integration)."""

from typer.testing import CliRunner

from onevision.cli.main import app


def test_quickstart_tiny_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["quickstart", "--preset", "tiny", "--no-services"])
    assert result.exit_code == 0, result.output
    for step in ("[1/4] world", "[2/4] ANN baselines", "[3/4] image encoder alignment and VRQ tokenizer", "summary"):
        assert step in result.output
    assert "| aligned | all |" in result.output and "| vrq |" in result.output
    assert (tmp_path / "reports" / "eval_ann_tiny.json").is_file()
    assert list((tmp_path / "data" / "registry" / "tokenizer-vrq-tiny").glob("v0001/item_sids.parquet"))
    again = CliRunner().invoke(app, ["quickstart", "--preset", "tiny", "--no-services"])
    assert again.exit_code == 0 and "already built, reused" in again.output and "reused" in again.output
