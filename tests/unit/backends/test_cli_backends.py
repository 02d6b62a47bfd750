from __future__ import annotations

import pytest
from click.testing import CliRunner

from mudpuppy.launcher.cli import cli

pytestmark = pytest.mark.timeout(300)


def test_backends_table_lists_capabilities() -> None:
    result = CliRunner().invoke(cli, ["backends"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in ("local", "ssh", "slurm"):
        assert name in result.output
    assert "multi-node" in result.output
