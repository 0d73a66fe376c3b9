"""The `qudao` command, run in-process the way `make serve` runs it.

Each test gets its own SQLite file and key file (copied from a module template that was
migrated, and seeded with the demo data, once), so nothing touches ./var.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from api import cli
from api.app import create_app
from api.auth.principal import Role
from api.auth.scopes import ROLE_SCOPES
from api.auth.secrets import verify_password
from api.auth.tokens import decode_access_token
from api.cache import InProcessCache
from api.db import Database
from api.graphql.schema import export_sdl
from api.seed import DEMO_PASSWORD
from api.settings import Settings

app = cli.app
runner = CliRunner()
T = TypeVar("T")
BASE = "http://qudao.test"
PASSWORD = "long enough password"


@dataclass
class CliEnv:
    directory: Path

    @property
    def db_file(self) -> Path:
        return self.directory / "qudao.db"

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db_file) as conn:
            return conn.execute(sql, args).fetchall()

    def one(self, sql: str, *args: object) -> Any:
        (row,) = self.rows(sql, *args)
        return row[0] if len(row) == 1 else row

    def execute(self, sql: str, *args: object) -> None:
        with sqlite3.connect(self.db_file) as conn:
            conn.execute(sql, args)

    def partner_id(self, code: str) -> int:
        return self.one("SELECT id FROM partner WHERE code = ?", code)


def _use(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{directory}/qudao.db")
    monkeypatch.setenv("QUDAO_JWT_KEYS_FILE", str(directory / "jwks.json"))
    for name in ("QUDAO_JWT_KEYS", "QUDAO_ISSUER", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two database files built once: migrated only, and migrated plus the demo seed."""
    made: dict[str, Path] = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("empty", "demo"):
            directory = made[name] = tmp_path_factory.mktemp(f"cli-{name}")
            _use(monkeypatch, directory)
            result = qudao("migrate")
            assert result.exit_code == 0, result.output
            if name == "demo":
                result = qudao("seed", "--demo")
                assert result.exit_code == 0, result.output
    return made


def _env(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliEnv:
    shutil.copy(template / "qudao.db", tmp_path / "qudao.db")
    _use(monkeypatch, tmp_path)
    return CliEnv(tmp_path)


@pytest.fixture
def demo(templates, tmp_path, monkeypatch) -> CliEnv:
    """A database with the demo network and demo logins."""
    return _env(templates["demo"], tmp_path, monkeypatch)


@pytest.fixture
def empty(templates, tmp_path, monkeypatch) -> CliEnv:
    """A migrated database with no data."""
    return _env(templates["empty"], tmp_path, monkeypatch)


def qudao(*args: str, input: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=input)


def against_app(call: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run ``call`` against the app as `qudao serve` would build it from this environment."""

    async def run() -> T:
        settings = Settings.from_env()
        db = Database(settings.database_url)
        try:
            application = create_app(settings, db=db, cache=InProcessCache())
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
                return await call(http)
        finally:
            await db.dispose()

    return asyncio.run(run())


def fetch_token(auth: tuple[str, str], **form: str) -> httpx.Response:
    async def call(http: httpx.AsyncClient) -> httpx.Response:
        return await http.post("/oauth/token", data=form, auth=auth)

    return against_app(call)


def claims_of(token: str) -> dict[str, Any]:
    settings = Settings.from_env()
    return decode_access_token(settings.key_ring(), token, issuer=settings.issuer)


def credentials(stdout: str) -> dict[str, str]:
    """The ``client_id: …`` / ``client_secret: …`` lines of a command's output."""
    found = {}
    for line in stdout.splitlines():
        key, sep, value = line.strip().partition(": ")
        if sep and key in ("client_id", "client_secret"):
            found[key] = value
    return found


def assert_refused(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# --- the original commands -----------------------------------------------------------------


def test_migrate_then_seed_demo_once(tmp_path, monkeypatch):
    _use(monkeypatch, tmp_path / "var")
    migrated = qudao("migrate")
    assert migrated.exit_code == 0, migrated.output
    first = qudao("seed", "--demo")
    assert first.exit_code == 0 and "seeded" in first.output
    again = qudao("seed", "--demo")
    assert again.exit_code == 0 and "already present" in again.output


def test_seed_needs_demo_flag():
    result = qudao("seed")
    assert result.exit_code == 2


def test_export_schema(tmp_path):
    target = tmp_path / "schema.graphql"
    result = qudao("export-schema", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == export_sdl()


# --- user create ---------------------------------------------------------------------------


def test_user_create_with_password_option(demo):
    result = qudao(
        "user", "create", "--email", "Ops@Example.com", "--role", "HQ_ADMIN", "--password", PASSWORD
    )
    assert result.exit_code == 0, result.output
    role, partner, store, hashed = demo.one(
        "SELECT role, partner_id, store_id, password_hash FROM staff_user WHERE email = ?",
        "ops@example.com",
    )
    assert (role, partner, store) == ("hq_admin", None, None)
    assert verify_password(hashed, PASSWORD)
    assert PASSWORD not in result.output


def test_user_create_resolves_partner_and_store_codes(demo):
    store = qudao(
        "user",
        "create",
        "--email",
        "clerk@example.com",
        "--role",
        "store_staff",
        "--store",
        "S-SH-002",
        "--password",
        PASSWORD,
    )
    assert store.exit_code == 0, store.output
    assert demo.one(
        "SELECT u.partner_id, s.code FROM staff_user u JOIN store s ON s.id = u.store_id "
        "WHERE u.email = 'clerk@example.com'"
    ) == (demo.partner_id("SH-PD-AG"), "S-SH-002")

    by_id = str(demo.partner_id("ZJ-DIST"))
    boss = qudao(
        "user",
        "create",
        "--email",
        "boss@example.com",
        "--role",
        "Partner_Admin",
        "--partner",
        by_id,
        "--password",
        PASSWORD,
    )
    assert boss.exit_code == 0, boss.output
    assert demo.one("SELECT partner_id FROM staff_user WHERE email = 'boss@example.com'") == int(
        by_id
    )


def test_user_create_reads_the_password_from_stdin(demo):
    result = qudao(
        "user",
        "create",
        "--email",
        "piped@example.com",
        "--role",
        "marketer",
        input=f"{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    hashed = demo.one("SELECT password_hash FROM staff_user WHERE email = 'piped@example.com'")
    assert verify_password(hashed, PASSWORD)


def test_user_create_prompts_twice_on_a_terminal(demo, monkeypatch):
    monkeypatch.setattr(cli, "_stdin_is_tty", lambda: True)
    result = qudao(
        "user",
        "create",
        "--email",
        "typed@example.com",
        "--role",
        "marketer",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "Repeat for confirmation" in result.output
    assert PASSWORD not in result.output  # hidden input
    hashed = demo.one("SELECT password_hash FROM staff_user WHERE email = 'typed@example.com'")
    assert verify_password(hashed, PASSWORD)


def test_user_create_refuses_a_duplicate_email(demo):
    args = ["user", "create", "--email", "twice@example.com", "--role", "hq_admin"]
    assert qudao(*args, "--password", PASSWORD).exit_code == 0
    again = qudao("user", "create", "--email", "TWICE@example.com", *args[4:], input=PASSWORD)
    assert_refused(again, "--email", "That email has a user.")
    assert demo.one("SELECT count(*) FROM staff_user WHERE email = 'twice@example.com'") == 1


def test_user_create_refuses_a_bad_role(demo):
    for role in ("boss", "integration", "member"):
        result = qudao(
            "user", "create", "--email", "x@example.com", "--role", role, "--password", PASSWORD
        )
        assert_refused(result, "--role", "hq_admin, channel_manager")
    assert demo.one("SELECT count(*) FROM staff_user WHERE email = 'x@example.com'") == 0


def test_user_create_reports_every_service_problem(demo):
    result = qudao(
        "user",
        "create",
        "--email",
        "not-an-email",
        "--role",
        "partner_admin",
        "--password",
        "short",
    )
    assert_refused(result, "--email: Not an email", "--password:", "--partner:")


def test_user_create_needs_an_existing_partner_or_store(demo):
    for option in ("--partner", "--store"):
        result = qudao(
            "user",
            "create",
            "--email",
            "y@example.com",
            "--role",
            "store_staff",
            option,
            "NOPE",
            "--password",
            PASSWORD,
        )
        assert_refused(result, f"{option}: no {option[2:]} with id or code 'NOPE'")


def test_user_create_without_any_password(demo):
    result = qudao("user", "create", "--email", "z@example.com", "--role", "marketer", input="")
    assert_refused(result, "--password")


# --- client create -------------------------------------------------------------------------


def test_client_create_prints_credentials_that_work(demo):
    result = qudao(
        "client", "create", "--partner", "SH-DIST", "--scopes", "orders:write stock:write"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["client_id", "client_secret"]
    created = credentials(result.stdout)
    stored = demo.one(
        "SELECT secret_hash, partner_id, grant_types, scopes, first_party FROM oauth_client "
        "WHERE client_id = ?",
        created["client_id"],
    )
    assert created["client_secret"] not in stored[0]  # only a hash is kept
    assert stored[1:] == (
        demo.partner_id("SH-DIST"),
        "client_credentials",
        "orders:write stock:write",
        0,
    )

    response = fetch_token(
        (created["client_id"], created["client_secret"]), grant_type="client_credentials"
    )
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert claims["role"] == "integration"
    assert claims["partner_id"] == demo.partner_id("SH-DIST")
    assert claims["scope"] == "orders:write stock:write"

    wrong = fetch_token((created["client_id"], "not-the-secret"), grant_type="client_credentials")
    assert wrong.status_code == 401


def test_client_create_refuses_unknown_scopes(demo):
    result = qudao("client", "create", "--partner", "SH-DIST", "--scopes", "orders:write root")
    assert_refused(result, "unknown scopes: root")
    assert result.stdout == ""


def test_client_create_needs_a_partner_and_scopes_for_an_integration(demo):
    no_partner = qudao("client", "create", "--scopes", "orders:write")
    assert_refused(no_partner, "--partner: An integration client acts for a partner.")
    no_scopes = qudao("client", "create", "--partner", "SH-DIST")
    assert_refused(no_scopes, "--scopes")
    unknown = qudao("client", "create", "--partner", "NOPE", "--scopes", "orders:write")
    assert_refused(unknown, "no partner with id or code 'NOPE'")


def test_client_create_first_party_password_client(demo):
    result = qudao("client", "create", "--first-party", "--grants", "password refresh_token")
    assert result.exit_code == 0, result.output
    created = credentials(result.stdout)
    response = fetch_token(
        (created["client_id"], created["client_secret"]),
        grant_type="password",
        username="store@demo.qudao.dev",
        password=DEMO_PASSWORD,
    )
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["role"] == "store_staff"
    assert "refresh_token" in response.json()


def test_client_create_public_app_has_no_secret(demo):
    result = qudao(
        "client",
        "create",
        "--first-party",
        "--public",
        "--grants",
        "authorization_code refresh_token",
        "--redirect-uri",
        "https://console.example.com/cb",
        "--redirect-uri",
        "http://127.0.0.1:5173/cb",
    )
    assert result.exit_code == 0, result.output
    created = credentials(result.stdout)
    assert set(created) == {"client_id"}
    assert demo.one(
        "SELECT secret_hash, redirect_uris FROM oauth_client WHERE client_id = ?",
        created["client_id"],
    ) == (None, "https://console.example.com/cb http://127.0.0.1:5173/cb")


def test_client_create_first_party_refusals(demo):
    with_partner = qudao(
        "client", "create", "--first-party", "--partner", "SH-DIST", "--grants", "password"
    )
    assert_refused(with_partner, "--partner")
    no_grants = qudao("client", "create", "--first-party")
    assert_refused(no_grants, "--grants")
    no_redirect = qudao("client", "create", "--first-party", "--grants", "authorization_code")
    assert_refused(no_redirect, "--redirect-uri: Give a redirect URI.")
    password_integration = qudao(
        "client",
        "create",
        "--partner",
        "SH-DIST",
        "--scopes",
        "orders:write",
        "--grants",
        "password",
    )
    assert_refused(password_integration, "Only first-party apps may use passwords.")


# --- token ---------------------------------------------------------------------------------


def test_token_for_a_demo_role(demo):
    result = qudao("token", "--role", "partner_admin")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"  # only the token on stdout
    claims = claims_of(token)
    user_id = demo.one("SELECT id FROM staff_user WHERE email = 'partner@demo.qudao.dev'")
    assert claims["sub"] == f"user:{user_id}"
    assert claims["role"] == "partner_admin"
    assert claims["partner_id"] == demo.partner_id("SH-PD-AG")
    assert "store_id" not in claims
    assert claims["client_id"] == "qudao-cli"
    assert claims["scope"].split() == sorted(ROLE_SCOPES[Role.PARTNER_ADMIN])
    assert claims["exp"] - claims["iat"] == Settings().access_token_ttl


def test_token_narrowed_scopes_and_ttl(demo):
    result = qudao("token", "--role", "STORE_STAFF", "--scopes", "orders:read", "--ttl", "60")
    assert result.exit_code == 0, result.output
    claims = claims_of(result.stdout.strip())
    assert claims["scope"] == "orders:read"
    assert claims["exp"] - claims["iat"] == 60
    assert claims["store_id"] == demo.one("SELECT id FROM store WHERE code = 'S-SH-001'")
    assert claims["partner_id"] == demo.partner_id("SH-PD-AG")


def test_token_is_accepted_by_the_server(demo):
    token = qudao("token", "--user", "Partner@Demo.Qudao.Dev").stdout.strip()
    query = "{ partners(first: 20) { edges { node { code } } } }"

    async def call(http: httpx.AsyncClient) -> httpx.Response:
        return await http.post(
            "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
        )

    response = against_app(call)
    assert response.status_code == 200, response.text
    codes = {e["node"]["code"] for e in response.json()["data"]["partners"]["edges"]}
    assert "SH-PD-AG" in codes and "ZJ-DIST" not in codes  # scoped to the partner


def test_token_for_an_integration_client(demo):
    client_id = demo.one("SELECT client_id FROM oauth_client WHERE first_party = 0")
    result = qudao("token", "--client", client_id, "--scopes", "stock:write")
    assert result.exit_code == 0, result.output
    claims = claims_of(result.stdout.strip())
    assert claims["sub"] == f"client:{client_id}"
    assert claims["client_id"] == client_id
    assert claims["role"] == "integration"
    assert claims["partner_id"] == demo.partner_id("SH-PD-AG")
    assert claims["scope"] == "stock:write"

    beyond = qudao("token", "--client", client_id, "--scopes", "pii:read")
    assert_refused(beyond, "may not have: pii:read")

    demo.execute(
        "UPDATE oauth_client SET revoked_at = '2026-01-01 00:00:00' WHERE client_id = ?", client_id
    )
    revoked = qudao("token", "--client", client_id)
    assert_refused(revoked, "revoked")
    assert revoked.stdout == ""


def test_token_refusals(demo):
    assert_refused(qudao("token", "--user", "nobody@example.com"), "nobody@")
    assert_refused(qudao("token"), "exactly one of")
    assert_refused(
        qudao("token", "--role", "marketer", "--user", "admin@demo.qudao.dev"),
        "exactly one of",
    )
    assert_refused(qudao("token", "--role", "integration"), "not a staff role")
    assert_refused(qudao("token", "--client", "nope"), "no client 'nope'")
    assert_refused(qudao("token", "--client", "qudao-console"), "not an integration")
    assert_refused(
        qudao("token", "--role", "marketer", "--scopes", "orders:write"),
        "may not have: orders:write",
    )
    assert_refused(
        qudao("token", "--role", "marketer", "--scopes", "everything"),
        "unknown scopes: everything",
    )
    assert qudao("token", "--role", "marketer", "--ttl", "0").exit_code == 2

    demo.execute("UPDATE staff_user SET is_active = 0 WHERE email = 'channel@demo.qudao.dev'")
    assert_refused(qudao("token", "--role", "channel_manager"), "deactivated")


def test_token_for_a_role_before_the_demo_seed(empty):
    result = qudao("token", "--role", "hq_admin")
    assert_refused(result, "admin@demo.qudao.dev", "qudao seed --demo")
    assert result.stdout == ""
