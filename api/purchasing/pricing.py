"""Which price a partner pays for a SKU (价格表), and HQ publishing price lists.

Selection, for one partner, SKU and quantity at one moment:

1. Candidate lists are those valid now (``valid_from <= now < valid_until``) that hold the
   SKU and apply to the partner: its own contract list, or a list for its tier and/or type
   (a list naming a tier or a type applies only to partners with that tier or type).
2. The most specific wins: CONTRACT (the partner), then TIER_AND_TYPE, TIER, TYPE; between
   lists equally specific, the one valid from the latest moment (the newest edition), then
   the newest id.
3. On the winning list, the quantity break with the largest ``min_quantity`` not above the
   quantity applies (none: no discount).
4. Unit price = list price × (10000 − discount_bp) / 10000, rounded half-up to the cent
   (the one rounding rule, docs/domain.md); the line total is unit price × quantity, exact.

A SKU no valid list holds is NO_PRICE, or PRICE_LIST_EXPIRED when a list that applies held
it but is no longer (or not yet) valid: the partner learns why, not only that.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.catalog.models import Sku
from api.errors import DomainError, Problem
from api.partners.models import Partner, PartnerTier, PartnerType
from api.purchasing.errors import PurchasingErrorCode, require_hq
from api.purchasing.models import PriceBreak, PriceList, PriceListItem

MAX_NAME = 100
MAX_ITEMS = 500
MAX_CENTS = 10**12  # ten billion yuan: no unit price comes near it
MAX_QUANTITY = 10**7  # units of one SKU on one order
BASIS_POINTS = 10_000

PRICE_LIST_KEYSET = (PriceList.id,)


class PriceBasis(enum.Enum):
    """Why a list applied to a partner, most specific first."""

    CONTRACT = "contract"
    TIER_AND_TYPE = "tier_and_type"
    TIER = "tier"
    TYPE = "type"


def discounted(list_price_cents: int, discount_bp: int) -> int:
    """``list_price × (1 − discount_bp / 10000)`` rounded half-up to the cent, in integers."""
    return (list_price_cents * (BASIS_POINTS - discount_bp) + BASIS_POINTS // 2) // BASIS_POINTS


@dataclass(frozen=True, slots=True)
class Quote:
    """The price of ``quantity`` units of a SKU for one partner, and where it came from."""

    sku_id: int
    quantity: int
    price_list_id: int
    price_list_name: str
    basis: PriceBasis
    currency: str
    list_price_cents: int
    min_quantity: int
    pack_size: int
    break_min_quantity: int | None
    discount_bp: int
    unit_price_cents: int

    @property
    def line_total_cents(self) -> int:
        return self.unit_price_cents * self.quantity

    def explain(self) -> str:
        source = f"{self.basis.value.replace('_', ' ')} price list “{self.price_list_name}”"
        if self.break_min_quantity is None:
            return f"{source}: {self.list_price_cents} cents a unit, no quantity break reached"
        return (
            f"{source}: {self.list_price_cents} cents a unit, "
            f"{self.discount_bp / 100:g}% off from {self.break_min_quantity} units "
            f"= {self.unit_price_cents} cents (half-up to the cent)"
        )


def _basis(price_list: PriceList) -> PriceBasis:
    if price_list.partner_id is not None:
        return PriceBasis.CONTRACT
    if price_list.tier is not None and price_list.partner_type is not None:
        return PriceBasis.TIER_AND_TYPE
    return PriceBasis.TIER if price_list.tier is not None else PriceBasis.TYPE


_RANK = {basis: rank for rank, basis in enumerate(PriceBasis)}


def _applies_to(partner: Partner) -> ColumnElement[bool]:
    """SQL: the list applies to ``partner`` (its contract, or its tier and/or type)."""
    tier_ok = (
        PriceList.tier.is_(None)
        if partner.tier is None
        else or_(PriceList.tier.is_(None), PriceList.tier == partner.tier)
    )
    general = and_(
        PriceList.partner_id.is_(None),
        tier_ok,
        or_(PriceList.partner_type.is_(None), PriceList.partner_type == partner.type),
    )
    return or_(PriceList.partner_id == partner.id, general)


async def quote_lines(
    session: AsyncSession,
    partner: Partner,
    lines: Mapping[int, int],
    now: datetime,
) -> dict[int, Quote]:
    """Price each (SKU → quantity) for ``partner``; a DomainError names every line without a
    price (``lines`` index order is the mapping's)."""
    rows = (
        await session.execute(
            select(PriceList, PriceListItem)
            .join(PriceListItem, PriceListItem.price_list_id == PriceList.id)
            .where(PriceListItem.sku_id.in_(list(lines)), _applies_to(partner))
        )
    ).all()
    best: dict[int, tuple[PriceList, PriceListItem]] = {}
    expired: set[int] = set()
    for price_list, item in rows:
        if not (
            price_list.valid_from <= now
            and (price_list.valid_until is None or now < price_list.valid_until)
        ):
            expired.add(item.sku_id)
            continue
        held = best.get(item.sku_id)
        key = (-_RANK[_basis(price_list)], price_list.valid_from, price_list.id)
        if held is None or key > (-_RANK[_basis(held[0])], held[0].valid_from, held[0].id):
            best[item.sku_id] = (price_list, item)
    problems = [
        Problem(
            PurchasingErrorCode.PRICE_LIST_EXPIRED
            if sku_id in expired
            else PurchasingErrorCode.NO_PRICE,
            f"SKU {sku_id}: the price list that held it is not valid now"
            if sku_id in expired
            else f"SKU {sku_id}: no price list of yours holds it",
            ("lines", str(index)),
        )
        for index, sku_id in enumerate(lines)
        if sku_id not in best
    ]
    if problems:
        raise DomainError(problems)
    breaks = await _breaks(session, [(pl.id, item.sku_id) for pl, item in best.values()])
    quotes = {}
    for sku_id, (price_list, item) in best.items():
        quantity = lines[sku_id]
        reached = [b for b in breaks.get((price_list.id, sku_id), ()) if b.min_quantity <= quantity]
        top = max(reached, key=lambda b: b.min_quantity) if reached else None
        discount = top.discount_bp if top else 0
        quotes[sku_id] = Quote(
            sku_id=sku_id,
            quantity=quantity,
            price_list_id=price_list.id,
            price_list_name=price_list.name,
            basis=_basis(price_list),
            currency=price_list.currency,
            list_price_cents=item.unit_price_cents,
            min_quantity=item.min_quantity,
            pack_size=item.pack_size,
            break_min_quantity=top.min_quantity if top else None,
            discount_bp=discount,
            unit_price_cents=discounted(item.unit_price_cents, discount),
        )
    return quotes


async def quote_one(
    session: AsyncSession, partner_id: int, sku_id: int, quantity: int, now: datetime
) -> Quote | DomainError | None:
    """``purchasePrice``: the quote, or the refusal explaining why there is none; None for
    a partner that does not exist."""
    partner = await session.get(Partner, partner_id)
    if partner is None:
        return None
    try:
        return (await quote_lines(session, partner, {sku_id: quantity}, now))[sku_id]
    except DomainError as refused:
        return refused


async def _breaks(
    session: AsyncSession, pairs: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], list[PriceBreak]]:
    if not pairs:
        return {}
    wanted = set(pairs)
    rows = await session.scalars(
        select(PriceBreak).where(
            PriceBreak.price_list_id.in_({p for p, _ in pairs}),
            PriceBreak.sku_id.in_({s for _, s in pairs}),
        )
    )
    found: dict[tuple[int, int], list[PriceBreak]] = {}
    for row in rows:
        if (row.price_list_id, row.sku_id) in wanted:
            found.setdefault((row.price_list_id, row.sku_id), []).append(row)
    return found


# --- HQ publishes price lists -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakDraft:
    min_quantity: int
    discount_bp: int


@dataclass(frozen=True, slots=True)
class ItemDraft:
    sku_id: int
    unit_price_cents: int
    min_quantity: int = 1
    pack_size: int = 1
    breaks: Sequence[BreakDraft] = ()


@dataclass(frozen=True, slots=True)
class PriceListDraft:
    name: str
    valid_from: datetime
    items: Sequence[ItemDraft]
    valid_until: datetime | None = None
    partner_id: int | None = None
    tier: PartnerTier | None = None
    partner_type: PartnerType | None = None
    currency: str = "CNY"


def _check_item(problems: list[Problem], index: int, item: ItemDraft) -> None:
    path = ("items", str(index))
    invalid = PurchasingErrorCode.INVALID
    if not 0 <= item.unit_price_cents <= MAX_CENTS:
        problems.append(
            Problem(invalid, "A unit price is 0 to 10^12 cents.", (*path, "unitPriceCents"))
        )
    if not 1 <= item.min_quantity <= MAX_QUANTITY:
        problems.append(
            Problem(invalid, "A minimum quantity is at least 1.", (*path, "minQuantity"))
        )
    if not 1 <= item.pack_size <= MAX_QUANTITY:
        problems.append(Problem(invalid, "A pack size is at least 1.", (*path, "packSize")))
    seen: set[int] = set()
    for b, brk in enumerate(item.breaks):
        where = (*path, "breaks", str(b))
        if not 2 <= brk.min_quantity <= MAX_QUANTITY or brk.min_quantity in seen:
            problems.append(
                Problem(
                    invalid,
                    "A break starts at 2 units or more, once per quantity.",
                    (*where, "minQuantity"),
                )
            )
        if not 0 < brk.discount_bp < BASIS_POINTS:
            problems.append(
                Problem(
                    invalid,
                    "A discount is 1 to 9999 basis points.",
                    (*where, "discountBasisPoints"),
                )
            )
        seen.add(brk.min_quantity)


def _check_list(draft: PriceListDraft) -> None:
    invalid = PurchasingErrorCode.INVALID
    problems: list[Problem] = []
    if not draft.name.strip() or len(draft.name) > MAX_NAME:
        problems.append(Problem(invalid, f"A name is 1 to {MAX_NAME} characters.", ("name",)))
    if draft.partner_id is None and draft.tier is None and draft.partner_type is None:
        problems.append(
            Problem(
                PurchasingErrorCode.REQUIRED,
                "Say whom the list is for: a partner (contract), a tier, or a partner type.",
                ("tier",),
            )
        )
    if draft.partner_id is not None and (draft.tier is not None or draft.partner_type is not None):
        problems.append(
            Problem(
                invalid, "A contract list names one partner and no tier or type.", ("partnerId",)
            )
        )
    if draft.valid_until is not None and draft.valid_until <= draft.valid_from:
        problems.append(Problem(invalid, "validUntil must be after validFrom.", ("validUntil",)))
    if not draft.currency.isalpha() or len(draft.currency) != 3 or not draft.currency.isupper():
        problems.append(
            Problem(invalid, "A currency is an ISO 4217 code, e.g. CNY.", ("currency",))
        )
    if not 0 < len(draft.items) <= MAX_ITEMS:
        problems.append(Problem(invalid, f"A list holds 1 to {MAX_ITEMS} SKUs.", ("items",)))
    skus = [item.sku_id for item in draft.items]
    if len(set(skus)) != len(skus):
        problems.append(Problem(invalid, "A SKU appears once on a list.", ("items",)))
    for index, item in enumerate(draft.items):
        _check_item(problems, index, item)
    if problems:
        raise DomainError(problems)


async def create_price_list(
    session: AsyncSession, principal: Principal, draft: PriceListDraft
) -> PriceList:
    """Publish a list (HQ). Lists are never edited: a new edition supersedes by validity."""
    require_hq(principal, "Only HQ publishes price lists.")
    _check_list(draft)
    known = set(
        await session.scalars(select(Sku.id).where(Sku.id.in_([i.sku_id for i in draft.items])))
    )
    missing = [
        Problem(PurchasingErrorCode.NOT_FOUND, "No such SKU.", ("items", str(i), "skuId"))
        for i, item in enumerate(draft.items)
        if item.sku_id not in known
    ]
    if draft.partner_id is not None and await session.get(Partner, draft.partner_id) is None:
        missing.append(Problem(PurchasingErrorCode.NOT_FOUND, "No such partner.", ("partnerId",)))
    if missing:
        raise DomainError(missing)
    price_list = PriceList(
        name=draft.name.strip(),
        currency=draft.currency,
        partner_id=draft.partner_id,
        tier=draft.tier,
        partner_type=draft.partner_type,
        valid_from=draft.valid_from,
        valid_until=draft.valid_until,
        created_by=principal.subject,
    )
    session.add(price_list)
    await session.flush()
    session.add_all(
        PriceListItem(
            price_list_id=price_list.id,
            sku_id=item.sku_id,
            unit_price_cents=item.unit_price_cents,
            min_quantity=item.min_quantity,
            pack_size=item.pack_size,
        )
        for item in draft.items
    )
    await session.flush()
    session.add_all(
        PriceBreak(
            price_list_id=price_list.id,
            sku_id=item.sku_id,
            min_quantity=brk.min_quantity,
            discount_bp=brk.discount_bp,
        )
        for item in draft.items
        for brk in item.breaks
    )
    await session.flush()
    return price_list


def price_lists_query(principal: Principal) -> Select[Any]:
    require_hq(principal, "Price lists are HQ's; a partner asks purchasePrice for its own.")
    return select(PriceList)


async def price_lists_by_id(
    session: AsyncSession, principal: Principal, ids: Sequence[int]
) -> dict[int, PriceList]:
    if not ids:
        return {}
    rows = await session.scalars(price_lists_query(principal).where(PriceList.id.in_(set(ids))))
    return {row.id: row for row in rows}


async def items_of(
    session: AsyncSession, list_ids: Sequence[int]
) -> dict[int, list[tuple[PriceListItem, list[PriceBreak]]]]:
    """Each list's items with their breaks, in SKU order: two statements for all lists."""
    found: dict[int, list[tuple[PriceListItem, list[PriceBreak]]]] = {k: [] for k in list_ids}
    if not list_ids:
        return found
    items = await session.scalars(
        select(PriceListItem)
        .where(PriceListItem.price_list_id.in_(list_ids))
        .order_by(PriceListItem.price_list_id, PriceListItem.sku_id)
    )
    breaks: dict[tuple[int, int], list[PriceBreak]] = {}
    for row in await session.scalars(
        select(PriceBreak)
        .where(PriceBreak.price_list_id.in_(list_ids))
        .order_by(PriceBreak.min_quantity)
    ):
        breaks.setdefault((row.price_list_id, row.sku_id), []).append(row)
    for item in items:
        found[item.price_list_id].append((item, breaks.get((item.price_list_id, item.sku_id), [])))
    return found
