"""The `qudao` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.markup import escape

from api.analytics.cli import metrics_app
from api.commands import (
    console,
    fail,
    find_partner_or_store,
    load_settings,
    load_wiring,
    with_db,
)
from api.customers.cli import members_app
from api.loyalty.cli import points_app
from api.orders.cli import orders_app
from api.orders.import_cli import import_app
from api.segments.cli import segments_app

if TYPE_CHECKING:
    from api.auth.principal import Role
    from api.db import Database

T = TypeVar("T")

app = typer.Typer(help="Qudao: partner portal and private-domain CRM API.", no_args_is_help=True)
user_app = typer.Typer(help="Staff users.", no_args_is_help=True)
client_app = typer.Typer(help="OAuth clients.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(client_app, name="client")
app.add_typer(members_app, name="members")
app.add_typer(points_app, name="points")
app.add_typer(orders_app, name="orders")
app.add_typer(import_app, name="import")
app.add_typer(segments_app, name="segments")
app.add_typer(metrics_app, name="metrics")

STAFF_ROLES = ("hq_admin", "channel_manager", "marketer", "partner_admin", "store_staff")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, help="Worker processes (use Redis when more than one)."),
) -> None:
    """Serve the API (GraphiQL at /graphql)."""
    import uvicorn

    from api.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    if workers > 1 and not settings.redis_url:
        console.print(
            "[yellow]Several workers without REDIS_URL do not share rate limits or "
            "subscriptions; set REDIS_URL.[/]"
        )
    console.print(
        f"Qudao on http://{host}:{port}/graphql  (database: {_safe(settings.database_url)})"
    )
    uvicorn.run(
        "api.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        timeout_graceful_shutdown=15,
    )


def _safe(url: str) -> str:
    """A database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def migrate(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply database migrations."""
    from api.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url, revision)
    console.print(f"[green]Database at {revision}[/] ({_safe(settings.database_url)})")


@app.command()
def seed(demo: bool = typer.Option(False, "--demo", help="Seed the demo channel network.")) -> None:
    """Seed data (only --demo for now; skipped when the database has partners already)."""
    if not demo:
        console.print("Nothing to seed: pass --demo.")
        raise typer.Exit(2)
    from api.seed import seed_demo

    wiring = load_wiring()
    settings = wiring.settings
    seeded = with_db(settings, lambda db: seed_demo(db, wiring), options=False)
    if seeded is None:
        console.print(
            "Demo data already present (seeded when the database has no partners; the client "
            "secrets were printed then). Get a token with `qudao token --role hq_admin`."
        )
        return
    console.print("[green]Demo data seeded.[/] Client secrets are shown this once:")
    width = max(len(role.value) for _, role in seeded.users)
    lines = [f"Demo logins (password: {seeded.password}):"]
    lines += [f"  {role.value:<{width}}  {email}" for email, role in seeded.users]
    lines += [
        f"Console client (first party; {seeded.console.grant_types}):",
        f"  client_id: {seeded.console.client_id}",
        f"  client_secret: {seeded.console.secret}",
        f"Integration client for {seeded.integration_partner} (client_credentials; "
        f"{seeded.integration.scopes}):",
        f"  client_id: {seeded.integration.client_id}",
        f"  client_secret: {seeded.integration.secret}",
        "Log in:",
        f"  curl -u {seeded.console.client_id}:{seeded.console.secret} -d grant_type=password "
        f"-d username={seeded.users[0][0]} -d password={seeded.password} "
        f"{settings.issuer}/oauth/token",
    ]
    typer.echo("\n".join(lines))


@app.command("export-schema")
def export_schema(
    output: Path = typer.Option(Path("schema.graphql"), help="Where to write the SDL."),
) -> None:
    """Write the GraphQL schema (SDL) generated from code."""
    from api.graphql.schema import export_sdl

    output.write_text(export_sdl(), encoding="utf-8")
    console.print(f"Wrote {output}")


# --- identity: staff users, OAuth clients, operator tokens ----------------------------------


def _staff_role(value: str) -> Role:
    from api.auth.principal import Role

    name = value.strip().lower().replace("-", "_")
    if name not in STAFF_ROLES:
        fail(f"--role: {value!r} is not a staff role; one of: {', '.join(STAFF_ROLES)}.")
    return Role(name)


def _scope_set(value: str | None, option: str = "--scopes") -> set[str] | None:
    from api.auth import scopes as catalog

    if value is None:
        return None
    wanted = catalog.parse(value)
    if not wanted:
        fail(f"{option}: no scopes given.")
    if bad := catalog.unknown(wanted):
        fail(f"{option}: unknown scopes: {' '.join(sorted(bad))}.")
    return wanted


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def _read_password() -> str:
    if _stdin_is_tty():
        return typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        fail("--password: none given, and no password line on stdin.")
    return line


@user_app.command("create")
def user_create(
    email: str = typer.Option(..., "--email", help="Login email."),
    role: str = typer.Option(
        ..., "--role", help=f"One of {', '.join(STAFF_ROLES)} (any case).", show_default=False
    ),
    partner: str | None = typer.Option(
        None, "--partner", help="Partner id or code (partner_admin; store staff get the store's)."
    ),
    store: str | None = typer.Option(None, "--store", help="Store id or code (store_staff)."),
    password: str | None = typer.Option(
        None,
        "--password",
        help="Else prompted for (twice, hidden), or one line read from stdin when it is not a "
        "terminal. A password on the command line stays in shell history.",
    ),
) -> None:
    """Create a staff user."""
    staff_role = _staff_role(role)
    if password is None:
        password = _read_password()

    async def create(db: Database) -> tuple[int, str, int | None, int | None]:
        from api.auth import service

        async with db.transaction() as session:
            user = await service.create_user(
                session,
                email=email,
                password=password,
                role=staff_role,
                partner_id=await find_partner_or_store(session, "partner", partner),
                store_id=await find_partner_or_store(session, "store", store),
            )
            return user.id, user.email, user.partner_id, user.store_id

    user_id, saved_email, partner_id, store_id = with_db(load_settings(), create)
    where = "".join(
        f", {kind} {value}"
        for kind, value in (("partner", partner_id), ("store", store_id))
        if value is not None
    )
    console.print(
        f"[green]Created user {user_id}[/]: {escape(saved_email)} ({staff_role.value}{where})"
    )


@client_app.command("create")
def client_create(
    partner: str | None = typer.Option(
        None, "--partner", help="Partner id or code the integration acts for."
    ),
    scopes: str | None = typer.Option(
        None, "--scopes", help='The integration\'s scopes, e.g. "orders:write stock:write".'
    ),
    first_party: bool = typer.Option(
        False, "--first-party", help="One of our own apps: acts for a signed-in staff user."
    ),
    grants: str | None = typer.Option(
        None,
        "--grants",
        help='Grant types, e.g. "password refresh_token" (default: client_credentials).',
    ),
    redirect_uri: list[str] = typer.Option(
        [], "--redirect-uri", help="Redirect URI for authorization_code (repeatable)."
    ),
    public: bool = typer.Option(
        False, "--public", help="No secret (browser or mini-program app; PKCE)."
    ),
    name: str | None = typer.Option(None, "--name", help="A name for people."),
) -> None:
    """Register an OAuth client; prints its client_id and (once) its secret."""
    from api.auth import scopes as catalog

    if first_party:
        if partner is not None:
            fail("--partner: first-party apps act for staff users, not for a partner.")
        if scopes is not None:
            fail("--scopes: a first-party app gets its signed-in user's role scopes.")
        if grants is None:
            fail('--grants: give a first-party app\'s grants, e.g. "password refresh_token".')
    wanted = _scope_set(scopes)
    if not first_party and not wanted:
        fail('--scopes: give the integration\'s scopes, e.g. "orders:write stock:write".')
    grant_types = catalog.parse(grants) if grants is not None else {"client_credentials"}

    async def create(db: Database) -> tuple[str, str | None]:
        from api.auth import service

        async with db.transaction() as session:
            new = await service.create_client(
                session,
                name=name or ("First-party app" if first_party else f"Integration of {partner}"),
                grant_types=grant_types,
                scopes=wanted,
                partner_id=await find_partner_or_store(session, "partner", partner),
                redirect_uris=redirect_uri,
                first_party=first_party,
                public=public,
            )
            return new.client.client_id, new.secret

    client_id, secret = with_db(load_settings(), create)
    typer.echo(f"client_id: {client_id}")
    if secret is None:
        console.print("[green]Public client registered[/] (no secret: it must use PKCE).")
        return
    typer.echo(f"client_secret: {secret}")
    console.print("[yellow]The secret is shown this once; only its hash is stored.[/]")


@app.command()
def token(
    user: str | None = typer.Option(None, "--user", help="A staff user's email."),
    role: str | None = typer.Option(
        None, "--role", help="The seeded demo user of this role (see `qudao seed --demo`)."
    ),
    client: str | None = typer.Option(None, "--client", help="An integration client's client_id."),
    scopes: str | None = typer.Option(
        None, "--scopes", help="Narrow the token to these scopes (default: all it may have)."
    ),
    ttl: int | None = typer.Option(
        None, "--ttl", min=1, help="Lifetime in seconds (default: the server's, 900)."
    ),
) -> None:
    """Print an access token for an existing user or integration client (operator tool).

    Signed with the server's keys (./var/jwks.json or QUDAO_JWT_KEYS), so run it with the
    server's environment. Only the token goes to stdout.
    """
    from api.auth.scopes import ROLE_SCOPES
    from api.auth.tokens import TokenSubject, issue_access_token

    if sum(x is not None for x in (user, role, client)) != 1:
        fail("give exactly one of --user EMAIL, --role ROLE or --client CLIENT_ID.")
    settings = load_settings()
    wanted = _scope_set(scopes)
    if role is not None:
        from api.seed import DEMO_EMAILS

        user = DEMO_EMAILS[_staff_role(role)]

    async def principal(db: Database) -> tuple[str, TokenSubject, set[str]]:
        from sqlalchemy import select

        from api.auth import service
        from api.auth.models import OAuthClient
        from api.auth.principal import Role

        async with db.read() as session:
            if client is not None:
                row = await session.scalar(
                    select(OAuthClient).where(OAuthClient.client_id == client)
                )
                if row is None:
                    fail(f"--client: no client {client!r}.")
                if row.revoked_at is not None:
                    fail(f"--client: client {client!r} is revoked.")
                if "client_credentials" not in row.grant_types.split() or row.partner_id is None:
                    fail(f"--client: {client!r} is not an integration (client_credentials).")
                who = TokenSubject(f"client:{row.client_id}", Role.INTEGRATION, row.partner_id)
                return row.client_id, who, set(row.scopes.split())
            found = await service.user_by_email(session, user or "")
            if found is None:
                if role is None:
                    fail(f"--user: no staff user {user!r}.")
                fail(
                    f"--role: no demo user {user} (`qudao seed --demo` creates it in an "
                    "empty database); or use --user EMAIL."
                )
            if not found.is_active:
                fail(f"{found.email} is deactivated.")
            who = TokenSubject(f"user:{found.id}", found.role, found.partner_id, found.store_id)
            return "qudao-cli", who, set(ROLE_SCOPES[found.role])

    client_id, who, allowed = with_db(settings, principal)
    if wanted is not None and (denied := wanted - allowed):
        fail(
            f"--scopes: {who.subject} ({who.role.value}) may not have: {' '.join(sorted(denied))}."
        )
    scope = " ".join(sorted(allowed if wanted is None else wanted))
    lifetime = ttl or settings.access_token_ttl
    typer.echo(
        issue_access_token(
            settings.key_ring(),
            issuer=settings.issuer,
            client_id=client_id,
            who=who,
            scope=scope,
            ttl=lifetime,
        )
    )
    console.print(f"[dim]{who.subject} ({who.role.value}), {lifetime} s, scope: {scope}[/]")
