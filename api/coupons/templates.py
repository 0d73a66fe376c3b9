"""Coupon templates (优惠券模板): what a coupon gives, where and when. HQ creates them
(checked whole: every problem of a draft is reported at once), pauses or resumes them and
raises their stock; ``restrictions_of`` reads the stores and partners one is limited to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal
from api.coupons.access import templates_query
from api.coupons.discounts import CENT
from api.coupons.errors import CouponErrorCode
from api.coupons.models import (
    CancelPolicy,
    CouponChannel,
    CouponKind,
    CouponTemplate,
    CouponTemplatePartner,
    CouponTemplateStore,
    Stacking,
    TemplateStatus,
)
from api.db import utcnow
from api.errors import DomainError, Problem
from api.partners.models import Partner, Store

_CURRENCY = re.compile(r"[A-Z]{3}")
MAX_AMOUNT = Decimal("999999999999.99")  # Numeric(14, 2)
MAX_STOCK = 10**12
MAX_PER_PERSON = 1000
MAX_VALID_DAYS = 3660
MAX_SKU = 64


@dataclass(slots=True)
class TemplateDraft:
    name: str
    kind: CouponKind
    claim_channel: CouponChannel
    use_channel: CouponChannel
    total_stock: int
    currency: str = "CNY"
    threshold_amount: Decimal | None = None
    discount_amount: Decimal | None = None
    percent_off: int | None = None
    max_discount: Decimal | None = None
    exchange_sku: str | None = None
    claim_starts_at: datetime | None = None
    claim_ends_at: datetime | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    valid_days: int | None = None
    per_person_limit: int = 1
    stacking: Stacking = Stacking.EXCLUSIVE
    cancel_policy: CancelPolicy = CancelPolicy.RESTORE
    store_ids: Sequence[int] = ()
    partner_ids: Sequence[int] = ()


def require_hq(principal: Principal, what: str) -> None:
    """Templates, and grants from them, are the brand's campaigns: HQ's alone."""
    if not principal.is_hq:
        raise DomainError.one(CouponErrorCode.FORBIDDEN, f"Only HQ staff {what}.")


def _check_amount(
    problems: list[Problem], value: Decimal | None, name: str, path: str, *, required: bool
) -> None:
    if value is None:
        if required:
            problems.append(Problem(CouponErrorCode.REQUIRED, f"{name} is required.", (path,)))
        return
    try:
        exact = value == value.quantize(CENT)
    except InvalidOperation:
        exact = False
    if not value.is_finite() or not exact:
        problems.append(
            Problem(CouponErrorCode.INVALID, f"{name} must be an amount in cents.", (path,))
        )
    elif not Decimal(0) < value <= MAX_AMOUNT:
        problems.append(
            Problem(CouponErrorCode.INVALID, f"{name} must be above 0 and realistic.", (path,))
        )


def _not_used(problems: list[Problem], draft: TemplateDraft, *names: tuple[str, str]) -> None:
    for attribute, path in names:
        if getattr(draft, attribute) is not None:
            problems.append(
                Problem(
                    CouponErrorCode.INVALID,
                    f"{path} does not apply to a {draft.kind.name} coupon.",
                    (path,),
                )
            )


def _check_kind(problems: list[Problem], draft: TemplateDraft) -> None:
    """The amounts a template's kind needs, and none that it does not."""
    _KIND_CHECKS[draft.kind](problems, draft)


def _check_threshold_off(problems: list[Problem], draft: TemplateDraft) -> None:
    """满减 (amount off over a threshold): 满 threshold 减 discount."""
    _check_amount(
        problems, draft.threshold_amount, "The threshold", "thresholdAmount", required=True
    )
    _check_amount(problems, draft.discount_amount, "The discount", "discountAmount", required=True)
    if (
        draft.threshold_amount is not None
        and draft.discount_amount is not None
        and not draft.threshold_amount > draft.discount_amount
    ):
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                "The threshold must be above the discount (满100减20, not 满20减100).",
                ("thresholdAmount",),
            )
        )
    _not_used(
        problems,
        draft,
        ("percent_off", "percentOff"),
        ("max_discount", "maxDiscount"),
        ("exchange_sku", "exchangeSku"),
    )


def _check_percent_off(problems: list[Problem], draft: TemplateDraft) -> None:
    """折扣: percent off, an optional cap and threshold."""
    if draft.percent_off is None:
        problems.append(
            Problem(CouponErrorCode.REQUIRED, "The percent off is required.", ("percentOff",))
        )
    elif not 1 <= draft.percent_off <= 99:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                "The percent off is 1-99 (20 = 20% off, i.e. 8折).",
                ("percentOff",),
            )
        )
    _check_amount(problems, draft.max_discount, "The cap", "maxDiscount", required=False)
    _check_amount(
        problems, draft.threshold_amount, "The threshold", "thresholdAmount", required=False
    )
    _not_used(
        problems, draft, ("discount_amount", "discountAmount"), ("exchange_sku", "exchangeSku")
    )


def _check_fixed_off(problems: list[Problem], draft: TemplateDraft) -> None:
    """直减: a fixed amount off any order."""
    _check_amount(problems, draft.discount_amount, "The discount", "discountAmount", required=True)
    _not_used(
        problems,
        draft,
        ("threshold_amount", "thresholdAmount"),
        ("percent_off", "percentOff"),
        ("max_discount", "maxDiscount"),
        ("exchange_sku", "exchangeSku"),
    )


def _check_exchange(problems: list[Problem], draft: TemplateDraft) -> None:
    """兑换: exchanged for one unit of a SKU."""
    sku = (draft.exchange_sku or "").strip()
    if not sku:
        problems.append(
            Problem(CouponErrorCode.REQUIRED, "The SKU to exchange is required.", ("exchangeSku",))
        )
    elif len(sku) > MAX_SKU:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                f"A SKU is at most {MAX_SKU} characters.",
                ("exchangeSku",),
            )
        )
    _not_used(
        problems,
        draft,
        ("threshold_amount", "thresholdAmount"),
        ("discount_amount", "discountAmount"),
        ("percent_off", "percentOff"),
        ("max_discount", "maxDiscount"),
    )


_KIND_CHECKS: dict[CouponKind, Callable[[list[Problem], TemplateDraft], None]] = {
    CouponKind.AMOUNT_OFF_THRESHOLD: _check_threshold_off,
    CouponKind.PERCENT_OFF: _check_percent_off,
    CouponKind.FIXED_OFF: _check_fixed_off,
    CouponKind.EXCHANGE: _check_exchange,
}


def _check_windows(problems: list[Problem], draft: TemplateDraft) -> None:
    for attribute, path in (
        ("claim_starts_at", "claimStartsAt"),
        ("claim_ends_at", "claimEndsAt"),
        ("valid_from", "validFrom"),
        ("valid_until", "validUntil"),
    ):
        value = getattr(draft, attribute)
        if value is not None and value.utcoffset() is None:
            problems.append(
                Problem(CouponErrorCode.INVALID, "Give a time with its UTC offset.", (path,))
            )
            return  # comparing naive with aware times would fail below
    fixed = draft.valid_from is not None or draft.valid_until is not None
    if fixed and draft.valid_days is not None:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                "Give fixed validity dates or validDays after the claim, not both.",
                ("validDays",),
            )
        )
    elif fixed:
        if draft.valid_from is None or draft.valid_until is None:
            missing = "validFrom" if draft.valid_from is None else "validUntil"
            problems.append(
                Problem(CouponErrorCode.REQUIRED, "Fixed validity needs both dates.", (missing,))
            )
        elif not draft.valid_from < draft.valid_until:
            problems.append(
                Problem(
                    CouponErrorCode.INVALID,
                    "The validity must end after it starts.",
                    ("validUntil",),
                )
            )
    elif draft.valid_days is None:
        problems.append(
            Problem(
                CouponErrorCode.REQUIRED,
                "Give fixed validity dates (validFrom, validUntil) or validDays.",
                ("validDays",),
            )
        )
    elif not 1 <= draft.valid_days <= MAX_VALID_DAYS:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                f"validDays is 1-{MAX_VALID_DAYS}.",
                ("validDays",),
            )
        )
    starts, ends = draft.claim_starts_at, draft.claim_ends_at
    if starts is not None and ends is not None and not starts < ends:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                "The claim window must end after it starts.",
                ("claimEndsAt",),
            )
        )
    if ends is not None and draft.valid_until is not None and ends > draft.valid_until:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                "Claims cannot go on after the coupons expire.",
                ("claimEndsAt",),
            )
        )


def _check_counts(problems: list[Problem], draft: TemplateDraft) -> None:
    if not 1 <= draft.total_stock <= MAX_STOCK:
        problems.append(
            Problem(CouponErrorCode.INVALID, "The stock is at least 1.", ("totalStock",))
        )
    if not 1 <= draft.per_person_limit <= MAX_PER_PERSON:
        problems.append(
            Problem(
                CouponErrorCode.INVALID,
                f"The per-person limit is 1-{MAX_PER_PERSON}.",
                ("perPersonLimit",),
            )
        )


async def _check_targets(
    session: AsyncSession, problems: list[Problem], draft: TemplateDraft
) -> tuple[list[int], list[int]]:
    store_ids = list(dict.fromkeys(draft.store_ids))
    partner_ids = list(dict.fromkeys(draft.partner_ids))
    found_stores = set(
        await session.scalars(select(Store.id).where(Store.id.in_(store_ids))) if store_ids else ()
    )
    found_partners = set(
        await session.scalars(select(Partner.id).where(Partner.id.in_(partner_ids)))
        if partner_ids
        else ()
    )
    for index, store_id in enumerate(draft.store_ids):
        if store_id not in found_stores:
            problems.append(
                Problem(CouponErrorCode.UNKNOWN_STORE, "No such store.", ("storeIds", str(index)))
            )
    for index, partner_id in enumerate(draft.partner_ids):
        if partner_id not in found_partners:
            problems.append(
                Problem(
                    CouponErrorCode.UNKNOWN_PARTNER,
                    "No such partner.",
                    ("partnerIds", str(index)),
                )
            )
    return store_ids, partner_ids


async def create_template(
    session: AsyncSession,
    principal: Principal,
    draft: TemplateDraft,
    *,
    now: datetime | None = None,
) -> CouponTemplate:
    require_hq(principal, "create coupon templates")
    problems: list[Problem] = []
    name = draft.name.strip()
    if not name:
        problems.append(Problem(CouponErrorCode.REQUIRED, "A name is required.", ("name",)))
    elif len(name) > 100:
        problems.append(
            Problem(CouponErrorCode.INVALID, "A name is at most 100 characters.", ("name",))
        )
    if not _CURRENCY.fullmatch(draft.currency):
        problems.append(
            Problem(CouponErrorCode.INVALID, "A currency is an ISO 4217 code.", ("currency",))
        )
    _check_kind(problems, draft)
    _check_windows(problems, draft)
    _check_counts(problems, draft)
    store_ids, partner_ids = await _check_targets(session, problems, draft)
    if problems:
        raise DomainError(problems)

    template = CouponTemplate(
        name=name,
        kind=draft.kind,
        status=TemplateStatus.ACTIVE,
        currency=draft.currency,
        threshold_amount=draft.threshold_amount,
        discount_amount=draft.discount_amount,
        percent_off=draft.percent_off,
        max_discount=draft.max_discount,
        exchange_sku=draft.exchange_sku.strip() if draft.exchange_sku else None,
        claim_channel=draft.claim_channel,
        use_channel=draft.use_channel,
        claim_starts_at=draft.claim_starts_at,
        claim_ends_at=draft.claim_ends_at,
        valid_from=draft.valid_from,
        valid_until=draft.valid_until,
        valid_days=draft.valid_days,
        total_stock=draft.total_stock,
        issued=0,
        per_person_limit=draft.per_person_limit,
        stacking=draft.stacking,
        cancel_policy=draft.cancel_policy,
        created_by=principal.subject,
        created_at=now or utcnow(),
    )
    session.add(template)
    await session.flush()
    session.add_all(CouponTemplateStore(template_id=template.id, store_id=s) for s in store_ids)
    session.add_all(
        CouponTemplatePartner(template_id=template.id, partner_id=p) for p in partner_ids
    )
    await session.flush()
    return template


async def update_template(
    session: AsyncSession,
    principal: Principal,
    template_id: int,
    *,
    status: TemplateStatus | None = None,
    total_stock: int | None = None,
) -> CouponTemplate:
    """Pause or resume a template, or raise its stock. Stock is never lowered: coupons
    already issued stay issued, and lowering it under concurrent claims would race."""
    require_hq(principal, "change coupon templates")
    template = await session.scalar(
        templates_query(principal)
        .where(CouponTemplate.id == template_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if template is None:
        raise DomainError.one(CouponErrorCode.NOT_FOUND, "No such coupon template.", "id")
    if total_stock is not None:
        if total_stock < template.total_stock:
            raise DomainError.one(
                CouponErrorCode.INVALID,
                f"Stock can only be raised (it is {template.total_stock}).",
                "totalStock",
            )
        if total_stock > MAX_STOCK:
            raise DomainError.one(
                CouponErrorCode.INVALID, "That stock is not realistic.", "totalStock"
            )
        template.total_stock = total_stock
    if status is not None:
        template.status = status
    await session.flush()
    return template


async def restrictions_of(
    session: AsyncSession, template_ids: Sequence[int]
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(store ids, partner ids) each template is limited to; empty lists: no limit."""
    stores: dict[int, list[int]] = {t: [] for t in template_ids}
    partners: dict[int, list[int]] = {t: [] for t in template_ids}
    if not template_ids:
        return stores, partners
    rows = await session.execute(
        select(CouponTemplateStore.template_id, CouponTemplateStore.store_id, literal("s"))
        .where(CouponTemplateStore.template_id.in_(template_ids))
        .union_all(
            select(
                CouponTemplatePartner.template_id, CouponTemplatePartner.partner_id, literal("p")
            ).where(CouponTemplatePartner.template_id.in_(template_ids))
        )
    )
    for template_id, target_id, which in sorted(rows, key=lambda r: (r[0], r[2], r[1])):
        (stores if which == "s" else partners)[template_id].append(target_id)
    return stores, partners
