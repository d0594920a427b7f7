"""Every command and sub-command of `onevision` answers --help."""

import pytest
from typer.testing import CliRunner

from onevision.cli.main import app

COMMANDS = [[], ["quickstart"], ["world"], ["world", "build"], ["catalog"], ["catalog", "validate"],
            ["catalog", "import"], ["catalog", "import", "grocery"], ["eval"], ["eval", "ann"],
            ["infra"], ["infra", "up"], ["infra", "down"], ["infra", "status"], ["encoder"], ["encoder", "align"],
            ["tokenizer"], ["tokenizer", "train"], ["tokenizer", "report"], ["tokenizer", "encode"],
            ["stream"], ["stream", "worker"], ["stream", "run"], ["stream", "start"], ["stream", "stop"],
            ["stream", "replay"], ["stream", "status"], ["features"], ["features", "apply"], ["features", "get"],
            ["train"], ["train", "all"], ["eval", "offline"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help(cmd):
    result = CliRunner().invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
