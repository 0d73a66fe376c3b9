"""Catalog rules: products, SKUs, per-channel price bands and channel-exclusive SKUs.

Plain async functions over a session; no GraphQL here. The catalog is brand-wide: HQ writes
it (``catalog:write``), every signed-in caller reads it. A SKU's cost price is the brand's
secret; what hides it is the API (``Sku.costPrice``), the service hands it to orders for
gross margin.

Price rules, checked on every write:

* money is a non-negative amount in cents, at most ``MAX_AMOUNT``;
* a band's floor is at most its ceiling, and its list price (the channel's default price)
  lies inside it;
* a band whose range leaves out the suggested retail price must name a list price: an order
  line without a price is charged the channel's default price (list price, else the SRP),
  and that default must be sellable on the channel;
* a channel-exclusive SKU (线上专供款) has bands only for the channels it is sold on.

Codes are unique: the INSERT itself is the check (``ON CONFLICT DO NOTHING RETURNING``), so
two concurrent creations of one code give one row and one DUPLICATE_CODE, on both engines.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Select, and_, delete, exists, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.catalog.models import (
    PriceBand,
    Product,
    ProductStatus,
    SalesChannel,
    Sku,
    SkuExclusiveChannel,
)
from api.errors import DomainError, Problem


class CatalogErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    REQUIRED = "required"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    DUPLICATE_CODE = "duplicate_code"
    DUPLICATE_CHANNEL = "duplicate_channel"
    INVALID_AMOUNT = "invalid_amount"
    FLOOR_ABOVE_CEILING = "floor_above_ceiling"
    LIST_PRICE_OUTSIDE_BAND = "list_price_outside_band"
    # The band leaves out the suggested retail price and names no list price of its own.
    DEFAULT_PRICE_OUTSIDE_BAND = "default_price_outside_band"
    # A band for a channel an exclusive SKU is not sold on.
    CHANNEL_NOT_SOLD = "channel_not_sold"
    TOO_MANY = "too_many"


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET

_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("999999999999.99")  # Numeric(14, 2)
MAX_SKUS = 100  # per product: a product is one page of SKUs, never a connection
MAX_BANDS = len(SalesChannel)  # one per channel
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_SEARCH = 100

PRODUCT_KEYSET = (Product.id,)


# --- drafts, filters and the order view -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Band:
    floor: Decimal
    ceiling: Decimal
    list_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BandDraft:
    channel: SalesChannel
    floor: Decimal
    ceiling: Decimal
    list_price: Decimal | None = None


@dataclass(slots=True)
class SkuDraft:
    code: str
    name: str
    suggested_retail_price: Decimal
    cost_price: Decimal
    currency: str = "CNY"
    exclusive_channels: Sequence[SalesChannel] = ()  # empty: sold on every channel
    price_bands: Sequence[BandDraft] = ()


@dataclass(slots=True)
class ProductDraft:
    code: str
    name: str
    skus: Sequence[SkuDraft]
    description: str | None = None


@dataclass(slots=True)
class ProductChanges:
    """A partial update: UNSET keeps a value; None clears the description."""

    name: str | _Unset = UNSET
    description: str | _Unset | None = UNSET
    status: ProductStatus | _Unset = UNSET


@dataclass(slots=True)
class SkuChanges:
    """A partial update. ``price_bands`` and ``exclusive_channels`` replace the SKU's."""

    name: str | _Unset = UNSET
    suggested_retail_price: Decimal | _Unset = UNSET
    cost_price: Decimal | _Unset = UNSET
    active: bool | _Unset = UNSET
    exclusive_channels: Sequence[SalesChannel] | _Unset = UNSET
    price_bands: Sequence[BandDraft] | _Unset = UNSET


@dataclass(slots=True)
class ProductFilter:
    search: str | None = None  # part of a product name or code, or of a SKU code
    statuses: Sequence[ProductStatus] = ()
    # Active, with an active SKU that may be sold on this channel.
    sellable_on: SalesChannel | None = None


@dataclass(frozen=True, slots=True)
class PricedSku:
    """A SKU as an order prices it on one channel."""

    sku_id: int
    code: str
    product_id: int
    name: str
    currency: str
    suggested_retail_price: Decimal
    cost_price: Decimal
    active: bool  # the SKU and its product are both on sale
    exclusive_channels: frozenset[SalesChannel]  # empty: sellable on every channel
    band: Band | None  # the band of the asked channel, if any

    @property
    def default_price(self) -> Decimal:
        """What a line without a price is charged: the band's list price, else the SRP."""
        if self.band is not None and self.band.list_price is not None:
            return self.band.list_price
        return self.suggested_retail_price

    def sellable_on(self, channel: SalesChannel) -> bool:
        return not self.exclusive_channels or channel in self.exclusive_channels


# --- reads ------------------------------------------------------------------------------------


def _like(text: str) -> str:
    """A LIKE pattern for a substring, with the pattern's own wildcards taken out."""
    cleaned = text.strip().lower()[:MAX_SEARCH]
    return "%" + cleaned.replace("\\", "").replace("%", "").replace("_", "") + "%"


def sellable_skus(channel: SalesChannel) -> Any:
    """SQL: the SKU (``Sku``) is active and not exclusive to other channels."""
    return and_(
        Sku.active.is_(True),
        or_(
            ~exists().where(SkuExclusiveChannel.sku_id == Sku.id),
            exists().where(
                SkuExclusiveChannel.sku_id == Sku.id, SkuExclusiveChannel.channel == channel
            ),
        ),
    )


def products_query(where: ProductFilter | None = None) -> Select[Any]:
    """Products every signed-in caller may read: the whole catalog, archived ones too (the
    orders that name them still show them); filter by status to browse what is on sale."""
    stmt = select(Product)
    if where is None:
        return stmt
    if where.statuses:
        stmt = stmt.where(Product.status.in_(where.statuses))
    if where.sellable_on is not None:
        stmt = stmt.where(
            Product.status == ProductStatus.ACTIVE,
            exists().where(Sku.product_id == Product.id, sellable_skus(where.sellable_on)),
        )
    if where.search and where.search.strip():
        pattern = _like(where.search)
        stmt = stmt.where(
            or_(
                func.lower(Product.name).like(pattern),
                func.lower(Product.code).like(pattern),
                exists().where(Sku.product_id == Product.id, func.lower(Sku.code).like(pattern)),
            )
        )
    return stmt


async def products_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, Product]:
    if not ids:
        return {}
    rows = await session.scalars(select(Product).where(Product.id.in_(set(ids))))
    return {p.id: p for p in rows}


async def skus_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, Sku]:
    if not ids:
        return {}
    rows = await session.scalars(select(Sku).where(Sku.id.in_(set(ids))))
    return {s.id: s for s in rows}


async def skus_by_code(session: AsyncSession, codes: Sequence[str]) -> dict[str, Sku]:
    if not codes:
        return {}
    rows = await session.scalars(select(Sku).where(Sku.code.in_(set(codes))))
    return {s.code: s for s in rows}


async def skus_of_products(
    session: AsyncSession, product_ids: Sequence[int]
) -> dict[int, list[Sku]]:
    """Every SKU of each product, in creation order: one statement for all the products."""
    found: dict[int, list[Sku]] = {pid: [] for pid in product_ids}
    if not product_ids:
        return found
    rows = await session.scalars(
        select(Sku).where(Sku.product_id.in_(set(product_ids))).order_by(Sku.product_id, Sku.id)
    )
    for sku in rows:
        found[sku.product_id].append(sku)
    return found


async def bands_of(session: AsyncSession, sku_ids: Sequence[int]) -> dict[int, list[PriceBand]]:
    """Each SKU's price bands in channel order (as SalesChannel lists them)."""
    found: dict[int, list[PriceBand]] = {sid: [] for sid in sku_ids}
    if not sku_ids:
        return found
    rows = await session.scalars(select(PriceBand).where(PriceBand.sku_id.in_(set(sku_ids))))
    order = {channel: i for i, channel in enumerate(SalesChannel)}
    for band in sorted(rows, key=lambda b: (b.sku_id, order[b.channel])):
        found[band.sku_id].append(band)
    return found


async def exclusive_channels_of(
    session: AsyncSession, sku_ids: Sequence[int]
) -> dict[int, list[SalesChannel]]:
    """The channels each SKU is exclusive to (empty: sold everywhere), in channel order."""
    found: dict[int, list[SalesChannel]] = {sid: [] for sid in sku_ids}
    if not sku_ids:
        return found
    rows = await session.execute(
        select(SkuExclusiveChannel.sku_id, SkuExclusiveChannel.channel).where(
            SkuExclusiveChannel.sku_id.in_(set(sku_ids))
        )
    )
    order = {channel: i for i, channel in enumerate(SalesChannel)}
    for sku_id, channel in sorted(rows, key=lambda r: (r[0], order[r[1]])):
        found[sku_id].append(channel)
    return found


async def skus_for_order(
    session: AsyncSession,
    channel: SalesChannel,
    *,
    ids: Sequence[int] = (),
    codes: Sequence[str] = (),
) -> list[PricedSku]:
    """The SKUs named by id or code, priced for ``channel``, in id order; unknown ones are
    left out. Two statements however many SKUs: the SKUs with their product's status and
    the channel's band (one join), then their exclusive channels."""
    if not ids and not codes:
        return []
    named = []
    if ids:
        named.append(Sku.id.in_(set(ids)))
    if codes:
        named.append(Sku.code.in_(set(codes)))
    rows = (
        await session.execute(
            select(Sku, Product.status, PriceBand.floor, PriceBand.ceiling, PriceBand.list_price)
            .join(Product, Product.id == Sku.product_id)
            .outerjoin(PriceBand, and_(PriceBand.sku_id == Sku.id, PriceBand.channel == channel))
            .where(or_(*named))
            .order_by(Sku.id)
        )
    ).all()
    if not rows:
        return []
    exclusive = await exclusive_channels_of(session, [row[0].id for row in rows])
    return [
        PricedSku(
            sku_id=sku.id,
            code=sku.code,
            product_id=sku.product_id,
            name=sku.name,
            currency=sku.currency,
            suggested_retail_price=sku.suggested_retail_price,
            cost_price=sku.cost_price,
            active=sku.active and status is ProductStatus.ACTIVE,
            exclusive_channels=frozenset(exclusive[sku.id]),
            band=None if floor is None else Band(floor, ceiling, list_price),
        )
        for sku, status, floor, ceiling, list_price in rows
    ]


# --- validation -------------------------------------------------------------------------------


def _require_hq(principal: Principal) -> None:
    if not principal.is_hq:
        raise DomainError.one(CatalogErrorCode.FORBIDDEN, "Only HQ staff manage the catalog.")


def _check_text(
    problems: list[Problem], value: str, name: str, path: tuple[str, ...], limit: int
) -> None:
    if not value.strip():
        problems.append(Problem(CatalogErrorCode.REQUIRED, f"{name} must not be blank.", path))
    elif len(value) > limit:
        problems.append(
            Problem(CatalogErrorCode.INVALID, f"{name} is over {limit} characters.", path)
        )


def _check_code(problems: list[Problem], code: str, path: tuple[str, ...]) -> None:
    if not _CODE.fullmatch(code):
        problems.append(
            Problem(
                CatalogErrorCode.INVALID,
                "A code is 1-64 letters, digits, '.', '_', '/' or '-', starting with a letter "
                "or digit.",
                path,
            )
        )


def _check_money(problems: list[Problem], value: Decimal, name: str, path: tuple[str, ...]) -> bool:
    try:
        in_cents = value.is_finite() and value == value.quantize(_CENT)
    except InvalidOperation:
        in_cents = False
    if not in_cents or not Decimal(0) <= value <= MAX_AMOUNT:
        problems.append(
            Problem(
                CatalogErrorCode.INVALID_AMOUNT,
                f"{name} must be an amount in cents from 0 to {MAX_AMOUNT}.",
                path,
            )
        )
        return False
    return True


def _check_channels(
    problems: list[Problem], channels: Sequence[SalesChannel], path: tuple[str, ...]
) -> None:
    seen: set[SalesChannel] = set()
    for index, channel in enumerate(channels):
        if channel in seen:
            problems.append(
                Problem(
                    CatalogErrorCode.DUPLICATE_CHANNEL,
                    f"{channel.name} is listed twice.",
                    (*path, str(index)),
                )
            )
        seen.add(channel)


def _check_bands(
    problems: list[Problem],
    bands: Sequence[BandDraft],
    *,
    srp: Decimal | None,
    exclusive: Sequence[SalesChannel],
    path: tuple[str, ...],
) -> None:
    """Every band on its own, and against the SKU's SRP (None: the SRP is itself invalid)
    and its exclusive channels."""
    if len(bands) > MAX_BANDS:
        problems.append(
            Problem(CatalogErrorCode.TOO_MANY, f"At most {MAX_BANDS} bands, one per channel.", path)
        )
        return
    seen: set[SalesChannel] = set()
    for index, band in enumerate(bands):
        at = (*path, str(index))
        if band.channel in seen:
            problems.append(
                Problem(
                    CatalogErrorCode.DUPLICATE_CHANNEL,
                    f"{band.channel.name} has two bands.",
                    (*at, "channel"),
                )
            )
        seen.add(band.channel)
        if exclusive and band.channel not in exclusive:
            problems.append(
                Problem(
                    CatalogErrorCode.CHANNEL_NOT_SOLD,
                    f"The SKU is exclusive to {', '.join(c.name for c in exclusive)}; it has no "
                    f"price on {band.channel.name}.",
                    (*at, "channel"),
                )
            )
        valid = _check_money(problems, band.floor, "The floor", (*at, "floor"))
        valid &= _check_money(problems, band.ceiling, "The ceiling", (*at, "ceiling"))
        if band.list_price is not None:
            valid &= _check_money(problems, band.list_price, "The list price", (*at, "listPrice"))
        if not valid:
            continue
        if band.floor > band.ceiling:
            problems.append(
                Problem(
                    CatalogErrorCode.FLOOR_ABOVE_CEILING,
                    f"The floor {band.floor} is above the ceiling {band.ceiling}.",
                    (*at, "floor"),
                )
            )
        elif band.list_price is not None:
            if not band.floor <= band.list_price <= band.ceiling:
                problems.append(
                    Problem(
                        CatalogErrorCode.LIST_PRICE_OUTSIDE_BAND,
                        f"The list price {band.list_price} is outside {band.floor}-{band.ceiling}.",
                        (*at, "listPrice"),
                    )
                )
        elif srp is not None and not band.floor <= srp <= band.ceiling:
            problems.append(
                Problem(
                    CatalogErrorCode.DEFAULT_PRICE_OUTSIDE_BAND,
                    f"The suggested retail price {srp} is outside {band.floor}-{band.ceiling} "
                    f"on {band.channel.name}: give the band a list price.",
                    (*at, "listPrice"),
                )
            )


def _check_sku(problems: list[Problem], draft: SkuDraft, path: tuple[str, ...]) -> None:
    _check_code(problems, draft.code, (*path, "code"))
    _check_text(problems, draft.name, "Name", (*path, "name"), MAX_NAME)
    if not _CURRENCY.fullmatch(draft.currency):
        problems.append(
            Problem(
                CatalogErrorCode.INVALID,
                "A currency is an ISO 4217 code, e.g. CNY.",
                (*path, "currency"),
            )
        )
    srp_valid = _check_money(
        problems,
        draft.suggested_retail_price,
        "The suggested retail price",
        (*path, "suggestedRetailPrice"),
    )
    _check_money(problems, draft.cost_price, "The cost price", (*path, "costPrice"))
    _check_channels(problems, draft.exclusive_channels, (*path, "exclusiveChannels"))
    _check_bands(
        problems,
        draft.price_bands,
        srp=draft.suggested_retail_price if srp_valid else None,
        exclusive=draft.exclusive_channels,
        path=(*path, "priceBands"),
    )


# --- writes -----------------------------------------------------------------------------------


def _insert(session: AsyncSession, model: type) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def _sku_values(draft: SkuDraft, product_id: int, now: datetime) -> dict[str, Any]:
    return {
        "product_id": product_id,
        "code": draft.code,
        "name": draft.name.strip(),
        "currency": draft.currency,
        "suggested_retail_price": draft.suggested_retail_price.quantize(_CENT),
        "cost_price": draft.cost_price.quantize(_CENT),
        "active": True,
        "created_at": now,
    }


async def _insert_skus(
    session: AsyncSession,
    drafts: Sequence[SkuDraft],
    product_id: int,
    now: datetime,
    code_paths: Sequence[tuple[str, ...]],
) -> list[int]:
    """Insert the SKUs with their bands and exclusive channels; their ids in draft order.
    A code taken (before or concurrently) is DUPLICATE_CODE on its ``code_paths`` entry,
    and the caller's transaction rolls back."""
    stmt = (
        _insert(session, Sku)
        .values([_sku_values(d, product_id, now) for d in drafts])
        .on_conflict_do_nothing(index_elements=["code"])
        .returning(Sku.id, Sku.code)
    )
    created = {code: sku_id for sku_id, code in await session.execute(stmt)}
    taken = [
        Problem(
            CatalogErrorCode.DUPLICATE_CODE,
            f"The SKU code {d.code!r} is already taken.",
            path,
        )
        for d, path in zip(drafts, code_paths, strict=True)
        if d.code not in created
    ]
    if taken:
        raise DomainError(taken)
    ids = [created[d.code] for d in drafts]
    await _replace_channels(
        session,
        {
            sku_id: (d.price_bands, d.exclusive_channels)
            for sku_id, d in zip(ids, drafts, strict=True)
        },
        replacing=False,
    )
    return ids


async def _replace_channels(
    session: AsyncSession,
    per_sku: dict[int, tuple[Sequence[BandDraft] | None, Sequence[SalesChannel] | None]],
    *,
    replacing: bool,
) -> None:
    """Write each SKU's bands and exclusive channels (None: keep the SKU's)."""
    band_skus = [sid for sid, (bands, _) in per_sku.items() if bands is not None]
    exclusive_skus = [sid for sid, (_, channels) in per_sku.items() if channels is not None]
    if replacing and band_skus:
        await session.execute(delete(PriceBand).where(PriceBand.sku_id.in_(band_skus)))
    if replacing and exclusive_skus:
        await session.execute(
            delete(SkuExclusiveChannel).where(SkuExclusiveChannel.sku_id.in_(exclusive_skus))
        )
    bands = [
        {
            "sku_id": sku_id,
            "channel": band.channel,
            "floor": band.floor.quantize(_CENT),
            "ceiling": band.ceiling.quantize(_CENT),
            "list_price": None if band.list_price is None else band.list_price.quantize(_CENT),
        }
        for sku_id, (drafts, _) in per_sku.items()
        for band in drafts or ()
    ]
    channels = [
        {"sku_id": sku_id, "channel": channel}
        for sku_id, (_, exclusive) in per_sku.items()
        for channel in dict.fromkeys(exclusive or ())
    ]
    if bands:
        await session.execute(insert(PriceBand), bands)
    if channels:
        await session.execute(insert(SkuExclusiveChannel), channels)


async def create_product(
    session: AsyncSession, principal: Principal, draft: ProductDraft, *, now: datetime
) -> Product:
    """A product with its SKUs (at least one), their bands and exclusive channels."""
    _require_hq(principal)
    problems: list[Problem] = []
    _check_code(problems, draft.code, ("code",))
    _check_text(problems, draft.name, "Name", ("name",), MAX_NAME)
    if draft.description is not None and len(draft.description) > MAX_DESCRIPTION:
        problems.append(
            Problem(
                CatalogErrorCode.INVALID,
                f"The description is over {MAX_DESCRIPTION} characters.",
                ("description",),
            )
        )
    if not draft.skus:
        problems.append(Problem(CatalogErrorCode.REQUIRED, "A product needs a SKU.", ("skus",)))
    elif len(draft.skus) > MAX_SKUS:
        problems.append(
            Problem(CatalogErrorCode.TOO_MANY, f"At most {MAX_SKUS} SKUs a product.", ("skus",))
        )
    else:
        seen: set[str] = set()
        for index, sku in enumerate(draft.skus):
            _check_sku(problems, sku, ("skus", str(index)))
            if sku.code in seen:
                problems.append(
                    Problem(
                        CatalogErrorCode.DUPLICATE_CODE,
                        f"The SKU code {sku.code!r} is given twice.",
                        ("skus", str(index), "code"),
                    )
                )
            seen.add(sku.code)
    if problems:
        raise DomainError(problems)

    product = (
        await session.scalars(
            _insert(session, Product)
            .values(
                code=draft.code,
                name=draft.name.strip(),
                description=draft.description,
                status=ProductStatus.ACTIVE,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["code"])
            .returning(Product)
        )
    ).one_or_none()
    if product is None:
        raise DomainError.one(
            CatalogErrorCode.DUPLICATE_CODE, f"The code {draft.code!r} is already taken.", "code"
        )
    await _insert_skus(
        session,
        draft.skus,
        product.id,
        now,
        [("skus", str(i), "code") for i in range(len(draft.skus))],
    )
    return product


async def _product_for_update(session: AsyncSession, product_id: int, path: str) -> Product:
    product = await session.scalar(
        select(Product).where(Product.id == product_id).with_for_update()
    )
    if product is None:
        raise DomainError.one(CatalogErrorCode.NOT_FOUND, "No such product.", path)
    return product


async def update_product(
    session: AsyncSession,
    principal: Principal,
    product_id: int,
    changes: ProductChanges,
    *,
    now: datetime,
) -> Product:
    """Rename, describe, archive (no longer sold) or reactivate a product."""
    _require_hq(principal)
    problems: list[Problem] = []
    if not isinstance(changes.name, _Unset):
        _check_text(problems, changes.name, "Name", ("name",), MAX_NAME)
    if isinstance(changes.description, str) and len(changes.description) > MAX_DESCRIPTION:
        problems.append(
            Problem(
                CatalogErrorCode.INVALID,
                f"The description is over {MAX_DESCRIPTION} characters.",
                ("description",),
            )
        )
    if problems:
        raise DomainError(problems)
    product = await _product_for_update(session, product_id, "id")
    if not isinstance(changes.name, _Unset):
        product.name = changes.name.strip()
    if not isinstance(changes.description, _Unset):
        product.description = changes.description
    if not isinstance(changes.status, _Unset):
        product.status = changes.status
    product.updated_at = now
    await session.flush()
    return product


async def create_sku(
    session: AsyncSession,
    principal: Principal,
    product_id: int,
    draft: SkuDraft,
    *,
    now: datetime,
) -> Sku:
    """Add a SKU (a new size or colour) to a product."""
    _require_hq(principal)
    problems: list[Problem] = []
    _check_sku(problems, draft, ())
    if problems:
        raise DomainError(problems)
    product = await _product_for_update(session, product_id, "productId")
    count = await session.scalar(
        select(func.count()).select_from(Sku).where(Sku.product_id == product.id)
    )
    if (count or 0) >= MAX_SKUS:
        raise DomainError.one(
            CatalogErrorCode.TOO_MANY, f"At most {MAX_SKUS} SKUs a product.", "productId"
        )
    (sku_id,) = await _insert_skus(session, [draft], product.id, now, [("code",)])
    sku = await session.get(Sku, sku_id)
    assert sku is not None
    return sku


async def update_sku(
    session: AsyncSession,
    principal: Principal,
    sku_id: int,
    changes: SkuChanges,
) -> Sku:
    """Change a SKU's name, prices or availability; replace its bands or exclusive channels.
    The bands that stay are checked again against a new SRP and new exclusive channels."""
    _require_hq(principal)
    sku = await session.scalar(select(Sku).where(Sku.id == sku_id).with_for_update())
    if sku is None:
        raise DomainError.one(CatalogErrorCode.NOT_FOUND, "No such SKU.", "id")
    problems: list[Problem] = []
    if not isinstance(changes.name, _Unset):
        _check_text(problems, changes.name, "Name", ("name",), MAX_NAME)
    srp: Decimal | None = sku.suggested_retail_price
    if not isinstance(changes.suggested_retail_price, _Unset):
        srp = changes.suggested_retail_price
        if not _check_money(problems, srp, "The suggested retail price", ("suggestedRetailPrice",)):
            srp = None
    if not isinstance(changes.cost_price, _Unset):
        _check_money(problems, changes.cost_price, "The cost price", ("costPrice",))
    if isinstance(changes.exclusive_channels, _Unset):
        exclusive = (await exclusive_channels_of(session, [sku.id]))[sku.id]
    else:
        exclusive = list(changes.exclusive_channels)
        _check_channels(problems, exclusive, ("exclusiveChannels",))
    if isinstance(changes.price_bands, _Unset):
        # The bands stay: a new SRP or new exclusive channels must still fit them, and the
        # problem is the changed field's (the bands are not in the input).
        kept = [
            BandDraft(b.channel, b.floor, b.ceiling, b.list_price)
            for b in (await bands_of(session, [sku.id]))[sku.id]
        ]
        misfits: list[Problem] = []
        _check_bands(misfits, kept, srp=srp, exclusive=exclusive, path=("priceBands",))
        problems.extend(
            Problem(
                p.code,
                p.message,
                ("exclusiveChannels",)
                if p.code is CatalogErrorCode.CHANNEL_NOT_SOLD
                else ("suggestedRetailPrice",),
            )
            for p in misfits
        )
    else:
        _check_bands(
            problems, changes.price_bands, srp=srp, exclusive=exclusive, path=("priceBands",)
        )
    if problems:
        raise DomainError(problems)

    if not isinstance(changes.name, _Unset):
        sku.name = changes.name.strip()
    if not isinstance(changes.suggested_retail_price, _Unset):
        sku.suggested_retail_price = changes.suggested_retail_price.quantize(_CENT)
    if not isinstance(changes.cost_price, _Unset):
        sku.cost_price = changes.cost_price.quantize(_CENT)
    if not isinstance(changes.active, _Unset):
        sku.active = changes.active
    await session.flush()
    await _replace_channels(
        session,
        {
            sku.id: (
                None if isinstance(changes.price_bands, _Unset) else changes.price_bands,
                None if isinstance(changes.exclusive_channels, _Unset) else exclusive,
            )
        },
        replacing=True,
    )
    return sku


__all__ = [
    "Band",
    "BandDraft",
    "CatalogErrorCode",
    "PricedSku",
    "ProductChanges",
    "ProductDraft",
    "ProductFilter",
    "SkuChanges",
    "SkuDraft",
    "skus_for_order",
]
