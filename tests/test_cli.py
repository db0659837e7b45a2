"""The perfdeck command: help everywhere, documented in the README, exports that work."""
from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from collectors.cli import main, parse_span
from collectors.store import migrate, write

README = Path(__file__).resolve().parent.parent / "README.md"


def all_commands(group: click.Group, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*prefix, name))


def test_every_command_has_help():
    runner = CliRunner()
    for path, cmd in all_commands(main):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert cmd.help, f"perfdeck {' '.join(path)} has no help text"


def test_every_top_level_command_is_in_the_readme():
    text = README.read_text()
    for path, _ in all_commands(main):
        if len(path) == 1:
            assert f"perfdeck {path[0]}" in text, f"README does not mention `perfdeck {path[0]}`"


@pytest.mark.parametrize("text, expected", [
    ("15m", timedelta(minutes=15)), ("24h", timedelta(hours=24)), ("7d", timedelta(days=7)),
    ("90s", timedelta(seconds=90)), ("1.5h", timedelta(hours=1.5)), ("2w", timedelta(weeks=2)),
])
def test_parse_span(text, expected):
    assert parse_span(text) == expected


def test_bad_span_is_a_clear_error(store):
    result = CliRunner().invoke(main, ["export", "latency", "--db", str(store), "--since", "yesterday"])
    assert result.exit_code == 2 and "not a span like 15m, 24h or 7d" in result.output


def test_export_raw_table_as_csv(store):
    with write(store) as con:
        migrate(con)
        con.execute("INSERT INTO deploys VALUES (now()::TIMESTAMP, 'api', 'v7', 'web-1')")
        con.execute("INSERT INTO deploys VALUES (now()::TIMESTAMP - INTERVAL 3 DAY, 'api', 'v6', 'web-1')")
    result = CliRunner().invoke(main, ["export", "deploys", "--db", str(store), "--since", "24h"])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(io.StringIO(result.output))
    assert list(df.columns) == ["ts", "service", "version", "host"] and list(df["version"]) == ["v7"]


def test_unknown_table_is_refused(store):
    result = CliRunner().invoke(main, ["export", "pg_shadow", "--db", str(store)])
    assert result.exit_code == 2 and "No such command 'pg_shadow'" in result.output
