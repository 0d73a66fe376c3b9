"""The `qudao` command, run in-process the way `make serve` runs it."""

from __future__ import annotations

from typer.testing import CliRunner

from api.cli import app
from api.graphql.schema import export_sdl

runner = CliRunner()


def test_migrate_then_seed_demo_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/var/qudao.db")
    migrated = runner.invoke(app, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    first = runner.invoke(app, ["seed", "--demo"])
    assert first.exit_code == 0 and "seeded" in first.output
    again = runner.invoke(app, ["seed", "--demo"])
    assert again.exit_code == 0 and "already present" in again.output


def test_seed_needs_demo_flag():
    result = runner.invoke(app, ["seed"])
    assert result.exit_code == 2


def test_export_schema(tmp_path):
    target = tmp_path / "schema.graphql"
    result = runner.invoke(app, ["export-schema", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == export_sdl()
