"""Every command and sub-command of `onevision` answers --help."""

import pytest
from typer.testing import CliRunner

from onevision_cli.main import app

COMMANDS = [[], ["quickstart"], ["world"], ["world", "build"], ["catalog"], ["catalog", "validate"],
            ["catalog", "import"], ["catalog", "import", "grocery"],
            ["catalog", "import", "table"], ["eval"], ["eval", "ann"],
            ["infra"], ["infra", "up"], ["infra", "down"], ["infra", "status"], ["encoder"], ["encoder", "align"],
            ["encode"],
            ["tokenizer"], ["tokenizer", "train"], ["tokenizer", "report"], ["tokenizer", "encode"],
            ["stream"], ["stream", "worker"], ["stream", "run"], ["stream", "start"], ["stream", "stop"],
            ["stream", "replay"], ["stream", "status"], ["features"], ["features", "apply"], ["features", "get"],
            ["train"], ["train", "all"], ["train", "mca"], ["train", "dpo-stream"], ["train", "distill"],
            ["eval", "offline"],
            ["registry"], ["registry", "list"], ["registry", "promote"], ["registry", "rollback"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help(cmd):
    result = CliRunner().invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_registry_commands_list_promote_and_roll_back(tmp_path):
    from onevision.registry import publish

    root = tmp_path / "reg"
    (tmp_path / "w").write_bytes(b"w")
    publish(root, "m", {"w": tmp_path / "w"}, {}, {})
    publish(root, "m", {"w": tmp_path / "w"}, {}, {"gate": {"order_HR@4": 80.5}}, parent="v0001",
            extra={"status": "rejected"}, make_current=False)
    publish(root, "m", {"w": tmp_path / "w"}, {}, {}, parent="v0001")
    run = lambda *a: CliRunner().invoke(app, ["registry", *a, "--registry", str(root)])  # noqa: E731
    listed = run("list", "m")
    assert listed.exit_code == 0 and listed.output.splitlines()[2].startswith("* v0003  accepted")
    assert "v0002  rejected parent v0001" in listed.output and "order_HR@4 80.50" in listed.output
    refused = run("promote", "m", "v0002")
    assert refused.exit_code == 2 and "rejected by its eval gate" in refused.output
    assert run("rollback", "m").output.strip() == "m: CURRENT v0003 -> v0001"
    assert run("promote", "m", "v0003").exit_code == 0
    assert run("list", "nope").exit_code == 2
