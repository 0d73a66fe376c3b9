"""Writing the catalog (HQ only): products with their SKUs, SKUs added to a product, and
partial updates of either (a SKU's bands and exclusive channels replaced whole).

Codes are unique: the INSERT itself is the check (``ON CONFLICT DO NOTHING RETURNING``), so
two concurrent creations of one code give one row and one DUPLICATE_CODE, on both engines.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, insert, select
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
from api.catalog.queries import bands_of, exclusive_channels_of
from api.catalog.rules import (
    CENT,
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_SKUS,
    BandDraft,
    CatalogErrorCode,
    SkuDraft,
    check_bands,
    check_channels,
    check_code,
    check_money,
    check_sku,
    check_text,
    require_hq,
)
from api.errors import DomainError, Problem


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


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


def _insert(session: AsyncSession, model: type) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def _sku_values(draft: SkuDraft, product_id: int, now: datetime) -> dict[str, Any]:
    return {
        "product_id": product_id,
        "code": draft.code,
        "name": draft.name.strip(),
        "currency": draft.currency,
        "suggested_retail_price": draft.suggested_retail_price.quantize(CENT),
        "cost_price": draft.cost_price.quantize(CENT),
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
            "floor": band.floor.quantize(CENT),
            "ceiling": band.ceiling.quantize(CENT),
            "list_price": None if band.list_price is None else band.list_price.quantize(CENT),
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
    require_hq(principal)
    problems: list[Problem] = []
    check_code(problems, draft.code, ("code",))
    check_text(problems, draft.name, "Name", ("name",), MAX_NAME)
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
            check_sku(problems, sku, ("skus", str(index)))
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
    require_hq(principal)
    problems: list[Problem] = []
    if not isinstance(changes.name, _Unset):
        check_text(problems, changes.name, "Name", ("name",), MAX_NAME)
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
    require_hq(principal)
    problems: list[Problem] = []
    check_sku(problems, draft, ())
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
    require_hq(principal)
    sku = await session.scalar(select(Sku).where(Sku.id == sku_id).with_for_update())
    if sku is None:
        raise DomainError.one(CatalogErrorCode.NOT_FOUND, "No such SKU.", "id")
    exclusive = await _check_sku_changes(session, sku, changes)
    if not isinstance(changes.name, _Unset):
        sku.name = changes.name.strip()
    if not isinstance(changes.suggested_retail_price, _Unset):
        sku.suggested_retail_price = changes.suggested_retail_price.quantize(CENT)
    if not isinstance(changes.cost_price, _Unset):
        sku.cost_price = changes.cost_price.quantize(CENT)
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


async def _check_sku_changes(
    session: AsyncSession, sku: Sku, changes: SkuChanges
) -> list[SalesChannel]:
    """Every problem of the changes at once; the SKU's exclusive channels after them."""
    problems: list[Problem] = []
    if not isinstance(changes.name, _Unset):
        check_text(problems, changes.name, "Name", ("name",), MAX_NAME)
    srp: Decimal | None = sku.suggested_retail_price
    if not isinstance(changes.suggested_retail_price, _Unset):
        srp = changes.suggested_retail_price
        if not check_money(problems, srp, "The suggested retail price", ("suggestedRetailPrice",)):
            srp = None
    if not isinstance(changes.cost_price, _Unset):
        check_money(problems, changes.cost_price, "The cost price", ("costPrice",))
    if isinstance(changes.exclusive_channels, _Unset):
        exclusive = (await exclusive_channels_of(session, [sku.id]))[sku.id]
    else:
        exclusive = list(changes.exclusive_channels)
        check_channels(problems, exclusive, ("exclusiveChannels",))
    if isinstance(changes.price_bands, _Unset):
        # The bands stay: a new SRP or new exclusive channels must still fit them, and the
        # problem is the changed field's (the bands are not in the input).
        kept = [
            BandDraft(b.channel, b.floor, b.ceiling, b.list_price)
            for b in (await bands_of(session, [sku.id]))[sku.id]
        ]
        misfits: list[Problem] = []
        check_bands(misfits, kept, srp=srp, exclusive=exclusive, path=("priceBands",))
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
        check_bands(
            problems, changes.price_bands, srp=srp, exclusive=exclusive, path=("priceBands",)
        )
    if problems:
        raise DomainError(problems)
    return exclusive
