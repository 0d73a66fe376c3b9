"""`qudao import orders FILE` end to end, in-process through typer's CliRunner, on a SQLite
file copied per test from a module template (migrated; a catalog of TEA-1 with a TMALL band of
85-115 and TEA-2; a marketplace shop ``tm-shop`` and an agent ``agent-1``)."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.catalog.models import PriceBand, Product, SalesChannel, Sku
from api.cli import app
from api.db import Database
from api.partners import service as partners
from api.partners.models import PartnerType
from tests.orders.test_import import HEADER, csv_text, record, row

runner = CliRunner()
HQ = Principal("user:1", Role.HQ_ADMIN, scopes=ROLE_SCOPES[Role.HQ_ADMIN])


def qudao(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _use(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{directory}/qudao.db")
    monkeypatch.setenv("QUDAO_JWT_KEYS_FILE", str(directory / "jwks.json"))
    for name in ("QUDAO_JWT_KEYS", "QUDAO_ISSUER", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


async def _fill(url: str) -> None:
    db = Database(url)
    try:
        async with db.transaction() as session:
            product = Product(code="TEA", name="茶具")
            session.add(product)
            await session.flush()
            tea = Sku(
                product_id=product.id,
                code="TEA-1",
                name="茶具 1",
                suggested_retail_price=Decimal("100.00"),
                cost_price=Decimal("40.00"),
            )
            session.add(tea)
            session.add(
                Sku(
                    product_id=product.id,
                    code="TEA-2",
                    name="茶具 2",
                    suggested_retail_price=Decimal("50.00"),
                    cost_price=Decimal("20.00"),
                )
            )
            await session.flush()
            session.add(
                PriceBand(
                    sku_id=tea.id,
                    channel=SalesChannel.TMALL,
                    floor=Decimal("85.00"),
                    ceiling=Decimal("115.00"),
                )
            )
            for code, kind in (
                ("tm-shop", PartnerType.MARKETPLACE_SHOP),
                ("agent-1", PartnerType.AGENT),
            ):
                await partners.create_partner(
                    session, HQ, partners.PartnerDraft(code=code, name=code, type=kind)
                )
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("import-cli")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _use(monkeypatch, directory)
        result = qudao("migrate")
        assert result.exit_code == 0, result.output
    asyncio.run(_fill(f"sqlite+aiosqlite:///{directory}/qudao.db"))
    return directory


@pytest.fixture
def env(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(template / "qudao.db", tmp_path / "qudao.db")
    _use(monkeypatch, tmp_path)
    return tmp_path


def rows(env: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(env / "qudao.db") as conn:
        return conn.execute(sql).fetchall()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def summary_line(result: Result) -> dict[str, str]:
    """The one-line summary on stdout, ``rows=3 imported=2 ...``."""
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("rows=")]
    return dict(part.split("=") for part in line.split() if "=" in part)


def test_import_orders_prints_a_summary_and_a_rerun_skips_everything(env):
    path = write(
        env / "tmall.csv",
        csv_text(
            row("T1"),
            row("T2", buyer="tb_2", paid="150.00", line_paid="100.00"),
            row("T2", buyer="tb_2", paid="150.00", sku="TEA-2", line_paid="50.00"),
        ),
    )
    result = qudao("import", "orders", str(path))
    assert result.exit_code == 0, result.output
    assert summary_line(result) == {
        "rows": "3",
        "imported": "2",
        "skipped": "0",
        "rejected_orders": "0",
        "rejected_rows": "0",
        "customers_created": "2",
        "violations": "0",
    }
    for label in ("Import of tmall.csv", "Rows read", "Orders imported", "Customers created"):
        assert label in result.stderr, result.stderr
    assert "Rejected rows by reason" not in result.stderr
    assert rows(env, "SELECT external_id, channel, status, taken_by FROM customer_order") == [
        ("T1", "tmall", "completed", "cli:import-orders"),
        ("T2", "tmall", "completed", "cli:import-orders"),
    ]
    assert rows(env, "SELECT note FROM order_event ORDER BY id") == [
        ("Imported from tmall.csv, line 2.",),
        ("Imported from tmall.csv, line 3.",),
    ]

    again = qudao("import", "orders", str(path), "--batch-size", "1")
    assert again.exit_code == 0, again.output
    assert summary_line(again)["imported"] == "0"
    assert summary_line(again)["skipped"] == "2"


def test_rejected_rows_are_grouped_by_reason_written_to_a_file_and_exit_1(env):
    path = write(
        env / "bad.csv",
        csv_text(
            row("T1"),
            row("T2", sku="NOPE"),
            row("T3", paid_at="2026-06-18 10:00:00"),
            row("T4", sku="NOPE"),
            row("T5", paid="80.00"),  # below the floor: imported, recorded
        ),
    )
    rejects = env / "rejects.csv"
    result = qudao("import", "orders", str(path), "--rejects", str(rejects))
    assert result.exit_code == 1, result.output
    line = summary_line(result)
    assert (line["imported"], line["rejected_rows"], line["violations"]) == ("2", "3", "1")
    assert "Rejected rows by reason" in result.stderr
    assert "unknown_sku" in result.stderr and "3, 5" in result.stderr
    assert "time_without_offset" in result.stderr
    assert str(rejects.name) in result.stderr
    written = list(csv.reader(io.StringIO(rejects.read_text(encoding="utf-8"))))
    assert written[0] == ["reject_line", "reject_reason", *HEADER.split(",")]
    assert [(r[0], r[1].split(":")[0], r[3]) for r in written[1:]] == [
        ("3", "unknown_sku", "T2"),
        ("4", "time_without_offset", "T3"),
        ("5", "unknown_sku", "T4"),
    ]
    assert rows(env, "SELECT kind FROM channel_violation") == [("price_below_floor",)]


def test_a_dry_run_commits_nothing(env):
    path = write(env / "tmall.csv", csv_text(row("T1"), row("T2", buyer="tb_2")))
    result = qudao("import", "orders", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing was committed" in result.stderr
    assert "Orders that would be imported" in result.stderr
    assert summary_line(result)["imported"] == "2"
    assert result.stdout.rstrip().endswith("dry_run")
    assert rows(env, "SELECT count(*) FROM customer_order") == [(0,)]
    assert rows(env, "SELECT count(*) FROM customer") == [(0,)]


def test_the_partner_option_names_a_marketplace_shop(env):
    path = write(env / "tmall.csv", csv_text(row("T1")))
    result = qudao("import", "orders", str(path), "--partner", "tm-shop")
    assert result.exit_code == 0, result.output
    assert rows(
        env,
        "SELECT p.code, o.reported_by_partner FROM customer_order o "
        "JOIN partner p ON p.id = o.partner_id",
    ) == [("tm-shop", 1)]
    for partner, message in (
        ("agent-1", "(agent) is not a marketplace shop"),
        ("nope", "--partner: no partner with id or code 'nope'"),
    ):
        refused = qudao("import", "orders", str(path), "--partner", partner)
        assert refused.exit_code == 2, refused.output
        assert message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.output


def test_the_format_comes_from_the_extension_or_the_option(env):
    path = write(env / "export.txt", record("J1") + "\n")
    refused = qudao("import", "orders", str(path))
    assert refused.exit_code == 2
    assert "give --format csv|jsonl" in refused.stderr
    bad = qudao("import", "orders", str(path), "--format", "xml")
    assert bad.exit_code == 2 and "'xml' is not csv or jsonl" in bad.stderr
    result = qudao("import", "orders", str(path), "--format", "JSONL")
    assert result.exit_code == 0, result.output
    assert rows(env, "SELECT external_id, channel FROM customer_order") == [("J1", "jd")]


def test_an_unusable_file_exits_2_with_the_reason(env):
    header_only = write(env / "orders.csv", "marketplace,order_id\n")
    result = qudao("import", "orders", str(header_only))
    assert result.exit_code == 2
    assert "The CSV header lacks buyer_id" in result.stderr
    missing = qudao("import", "orders", str(env / "missing.csv"))
    assert missing.exit_code == 2
    gbk = env / "gbk.csv"
    gbk.write_bytes(csv_text(row("T1", buyer="买家")).encode("gbk"))
    wrong = qudao("import", "orders", str(gbk))
    assert wrong.exit_code == 2 and "--encoding" in wrong.stderr
    right = qudao("import", "orders", str(gbk), "--encoding", "gbk")
    assert right.exit_code == 0, right.output
    assert qudao("import", "orders", str(gbk), "--batch-size", "0").exit_code == 2
