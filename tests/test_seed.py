"""The demo seed: its network, its logins and clients, and that its credentials work."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.app import create_app
from api.auth.models import OAuthClient, StaffUser
from api.auth.principal import Role
from api.auth.scopes import ROLE_SCOPES
from api.auth.tokens import decode_access_token
from api.cache import InProcessCache
from api.cli import app
from api.partners.models import Partner, Store
from api.seed import (
    CONSOLE_CLIENT_ID,
    DEMO_EMAILS,
    DEMO_PARTNERS,
    DEMO_PASSWORD,
    DEMO_STORES,
    INTEGRATION_SCOPES,
    MINIPROGRAM_CLIENT_ID,
    MINIPROGRAM_GRANTS,
    seed_demo,
)
from tests.conftest import GraphQLClient
from tests.wiring import WIRING

runner = CliRunner()
BASE = "http://qudao.test"


async def test_seed_demo_creates_logins_and_clients_once(db):
    seeded = await seed_demo(db, WIRING)
    assert seeded is not None
    assert seeded.password == DEMO_PASSWORD
    assert {role for _, role in seeded.users} == {
        Role.HQ_ADMIN,
        Role.CHANNEL_MANAGER,
        Role.MARKETER,
        Role.PARTNER_ADMIN,
        Role.STORE_STAFF,
    }
    assert seeded.console.client_id == CONSOLE_CLIENT_ID
    assert seeded.console.secret and seeded.integration.secret

    async with db.read() as session:
        ids = dict((await session.execute(select(Partner.code, Partner.id))).all())
        stores = dict((await session.execute(select(Store.code, Store.id))).all())
        users = {
            u.email: (u.role, u.partner_id, u.store_id, u.is_active)
            for u in await session.scalars(select(StaffUser))
        }
        clients = {c.client_id: c for c in await session.scalars(select(OAuthClient))}
    assert len(ids) == len(DEMO_PARTNERS) and len(stores) == len(DEMO_STORES)
    assert users == {
        "admin@demo.qudao.dev": (Role.HQ_ADMIN, None, None, True),
        "channel@demo.qudao.dev": (Role.CHANNEL_MANAGER, None, None, True),
        "marketing@demo.qudao.dev": (Role.MARKETER, None, None, True),
        "partner@demo.qudao.dev": (Role.PARTNER_ADMIN, ids["SH-PD-AG"], None, True),
        "store@demo.qudao.dev": (Role.STORE_STAFF, ids["SH-PD-AG"], stores["S-SH-001"], True),
    }
    assert set(clients) == {
        CONSOLE_CLIENT_ID,
        MINIPROGRAM_CLIENT_ID,
        seeded.integration.client_id,
    }
    miniprogram = clients[MINIPROGRAM_CLIENT_ID]
    assert miniprogram.first_party and miniprogram.secret_hash is None  # public: no secret
    assert set(miniprogram.grant_types.split()) == MINIPROGRAM_GRANTS
    console = clients[CONSOLE_CLIENT_ID]
    assert console.first_party and console.partner_id is None
    assert set(console.grant_types.split()) == {"password", "refresh_token"}
    integration = clients[seeded.integration.client_id]
    assert not integration.first_party
    assert integration.partner_id == ids["SH-PD-AG"]
    assert integration.grant_types == "client_credentials"
    assert set(integration.scopes.split()) == INTEGRATION_SCOPES
    for client in clients.values():  # secrets are stored hashed, never as given
        assert client.secret_hash not in (seeded.console.secret, seeded.integration.secret)

    assert await seed_demo(db, WIRING) is None  # skipped when present
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(StaffUser)) == len(users)
        assert await session.scalar(select(func.count()).select_from(OAuthClient)) == 3


async def test_seeded_credentials_work_at_the_token_endpoint(db, settings):
    seeded = await seed_demo(db, WIRING)
    assert seeded is not None
    application = create_app(settings, db=db, cache=InProcessCache())
    keys = application.state.keys
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url=BASE
    ) as http:
        for role, email in DEMO_EMAILS.items():
            response = await http.post(
                "/oauth/token",
                data={"grant_type": "password", "username": email, "password": DEMO_PASSWORD},
                auth=(seeded.console.client_id, seeded.console.secret),
            )
            assert response.status_code == 200, response.text
            claims = decode_access_token(
                keys, response.json()["access_token"], issuer=settings.issuer
            )
            assert claims["role"] == role.value
            assert set(claims["scope"].split()) == ROLE_SCOPES[role]

        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(seeded.integration.client_id, seeded.integration.secret),
        )
        assert response.status_code == 200, response.text
        claims = decode_access_token(keys, response.json()["access_token"], issuer=settings.issuer)
        assert claims["role"] == "integration"
        assert set(claims["scope"].split()) == INTEGRATION_SCOPES
        async with db.read() as session:
            agent = await session.scalar(select(Partner.id).where(Partner.code == "SH-PD-AG"))
        assert claims["partner_id"] == agent


def test_seed_command_prints_credentials_once(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/qudao.db")
    monkeypatch.setenv("QUDAO_JWT_KEYS_FILE", str(tmp_path / "jwks.json"))
    monkeypatch.delenv("QUDAO_ISSUER", raising=False)
    assert runner.invoke(app, ["migrate"]).exit_code == 0

    first = runner.invoke(app, ["seed", "--demo"])
    assert first.exit_code == 0, first.output
    assert "seeded" in first.stderr
    out = first.stdout
    assert f"password: {DEMO_PASSWORD}" in out
    for role, email in DEMO_EMAILS.items():
        assert f"{role.value}" in out and email in out
    pairs = [line.strip().partition(": ") for line in out.splitlines()]
    printed = [(key, value) for key, _, value in pairs if key in ("client_id", "client_secret")]
    assert [key for key, _ in printed] == ["client_id", "client_secret"] * 2
    assert printed[0] == ("client_id", CONSOLE_CLIENT_ID)
    console_secret = printed[1][1]
    assert (
        f"curl -u {CONSOLE_CLIENT_ID}:{console_secret} -d grant_type=password "
        f"-d username=admin@demo.qudao.dev -d password={DEMO_PASSWORD} "
        "http://127.0.0.1:8000/oauth/token"
    ) in out

    again = runner.invoke(app, ["seed", "--demo"])
    assert again.exit_code == 0, again.output
    assert "already present" in again.stderr
    assert again.stdout == ""
    assert console_secret not in again.output
    with sqlite3.connect(tmp_path / "qudao.db") as conn:
        assert conn.execute("SELECT count(*) FROM staff_user").fetchone() == (len(DEMO_EMAILS),)
        assert conn.execute("SELECT count(*) FROM oauth_client").fetchone() == (3,)
    assert not (tmp_path / "jwks.json").exists()  # seeding needs no signing key


async def test_the_demo_private_domain_is_browsable_as_the_store_clerk_sees_it(
    db, gql, app, issue_token
):
    """A demo store clerk sees their store's members with levels, points and coupons, and HQ
    sees the marketplace buyer that duplicates one of them."""
    await seed_demo(db, WIRING)
    async with db.read() as session:
        store = await session.scalar(select(Store).where(Store.code == "S-SH-001"))
    token = issue_token(Role.STORE_STAFF, partner_id=store.partner_id, store_id=store.id)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE,
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        members = (
            await GraphQLClient(http)(
                "{ customers { nodes { name level { code } points { balance } "
                "coupons { nodes { template { name } } } } } }"
            )
        )["customers"]["nodes"]
    assert [(m["name"], m["level"]["code"], m["points"]["balance"]) for m in members] == [
        ("王芳", "silver", 1200),  # 2,600 spent: silver from 2,000
        ("李娜", "gold", 5200),  # 9,200 spent: gold from 8,000
    ]
    assert all(len(m["coupons"]["nodes"]) == 1 for m in members)

    wang = (await gql('{ customers(filter: {search: "王芳"}) { nodes { id } } }'))["customers"]
    duplicates = (
        await gql(
            "query($id: ID!) { customerDuplicates(customerId: $id) { customer { firstChannel } } }",
            {"id": wang["nodes"][0]["id"]},
        )
    )["customerDuplicates"]
    assert [d["customer"]["firstChannel"] for d in duplicates] == ["marketplace"]
