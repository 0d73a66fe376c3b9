"""An app with real authentication (no dev switch) and the principals to call it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest_asyncio
from authlib.integrations.httpx_client import AsyncOAuth2Client

from api.app import create_app
from api.auth import service
from api.auth.principal import Role
from api.cache import InProcessCache
from api.partners import service as partners
from api.partners.models import PartnerType
from api.seed import SEEDER

BASE = "http://qudao.test"
TOKEN_URL = f"{BASE}/oauth/token"
PASSWORD = "correct horse battery"


@dataclass
class World:
    app: object
    partner_a: int
    partner_b: int
    store_a: int
    integration_id: str
    integration_secret: str
    console_id: str
    console_secret: str
    spa_id: str

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def oauth_client(
        self, client_id: str, secret: str | None = None, **kwargs: object
    ) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id, secret, transport=self.transport(), base_url=BASE, **kwargs
        )

    async def password_token(self, email: str, scope: str | None = None) -> dict:
        async with self.oauth_client(self.console_id, self.console_secret) as oauth:
            return await oauth.fetch_token(
                TOKEN_URL, username=email, password=PASSWORD, scope=scope
            )

    async def integration_token(self) -> dict:
        async with self.oauth_client(self.integration_id, self.integration_secret) as oauth:
            return await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials")


@pytest_asyncio.fixture
async def world(db, settings) -> AsyncIterator[World]:
    async with db.transaction() as session:
        a = await partners.create_partner(
            session, SEEDER, partners.PartnerDraft("PA", "Partner A", PartnerType.DISTRIBUTOR)
        )
        b = await partners.create_partner(
            session, SEEDER, partners.PartnerDraft("PB", "Partner B", PartnerType.DISTRIBUTOR)
        )
        store = await partners.create_store(
            session, SEEDER, partners.StoreDraft("SA", "Store A", "310115", "addr", a.id)
        )
        for email, role, partner_id, store_id in [
            ("admin@hq.example.com", Role.HQ_ADMIN, None, None),
            ("marketer@hq.example.com", Role.MARKETER, None, None),
            ("boss@a.example.com", Role.PARTNER_ADMIN, a.id, None),
            ("clerk@a.example.com", Role.STORE_STAFF, None, store.id),
        ]:
            await service.create_user(
                session,
                email=email,
                password=PASSWORD,
                role=role,
                partner_id=partner_id,
                store_id=store_id,
            )
        integration = await service.create_client(
            session,
            name="ERP of A",
            grant_types={"client_credentials"},
            scopes={"partners:read", "orders:write"},
            partner_id=a.id,
        )
        console = await service.create_client(
            session,
            name="Console backend",
            grant_types={"password", "refresh_token"},
            first_party=True,
        )
        spa = await service.create_client(
            session,
            name="Web console",
            grant_types={"authorization_code", "refresh_token"},
            redirect_uris=["https://console.example.com/callback"],
            first_party=True,
            public=True,
        )
    app = create_app(settings, db=db, cache=InProcessCache())
    yield World(
        app,
        a.id,
        b.id,
        store.id,
        integration.client.client_id,
        integration.secret,
        console.client.client_id,
        console.secret,
        spa.client.client_id,
    )


@pytest_asyncio.fixture
async def http(world) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=world.transport(), base_url=BASE) as client:
        yield client
