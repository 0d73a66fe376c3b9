"""GraphQL surface of the analytics reports (LTV, repurchase, retention, RFM, CAC/ROI,
attributed sales), channel spend, and ``Customer.metrics``: thin wrappers over reports.py.

Every report needs analytics:read and answers within the caller's scope (a partner: its own
recruited customers, attributed orders and spend). Gross margin, and ROI which reveals it,
are HQ's alone, like the brand's cost everywhere (``Order.costTotal``, ``Sku.costPrice``):
null for everyone else. Bad arguments (a range that ends before it starts or spans more than
three years, a date outside 2000-2100, a malformed id) come back as the report's ``errors``
with a code, never as an exception. ``customerMetrics`` is what the customers domain wires
into ``Customer.metrics``, so this module must not import ``api.customers.schema`` at module
level; member levels are reached lazily.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from api.analytics import loaders, reports
from api.analytics import models as analytics_models
from api.audit.service import AuditEntry
from api.auth.models import StaffUser
from api.auth.pii import PII_SCOPE, mask_email
from api.catalog.models import SalesChannel as SalesChannelValue
from api.catalog.schema import SalesChannel
from api.customers import loaders as customer_loaders
from api.db import utcnow
from api.errors import DomainError
from api.graphql.context import Context, Info
from api.graphql.errors import UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.money import Money
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import (
    Connection,
    Node,
    page_request,
    root_connection,
)
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

if TYPE_CHECKING:
    from api.customers.schema import MemberLevel

ANALYTICS_READ = "analytics:read"

AnalyticsErrorCode = strawberry.enum(reports.AnalyticsErrorCode)
LifetimeValueGroupBy = strawberry.enum(
    reports.LtvGroup,
    name="LifetimeValueGroupBy",
    description="COHORT_MONTH and FIRST_CHANNEL: the month and channel of the first counted "
    "order; PARTNER, STORE, GUIDE: who recruited the customer; LEVEL: the current level.",
)
RepurchaseGroupBy = strawberry.enum(reports.RepurchaseGroup, name="RepurchaseGroupBy")
RetentionPeriod = strawberry.enum(
    reports.Period,
    name="RetentionPeriod",
    description="Calendar weeks (Monday first) or months, in China Standard Time (UTC+8).",
)
AttributedSalesGroupBy = strawberry.enum(reports.AttributionGroup, name="AttributedSalesGroupBy")

_NONE_LABEL = "(none)"
_TOTAL_LABEL = "total"
_HQ_ONLY = " HQ only (it reveals the brand's cost): null for others."


@strawberry.type
class AnalyticsError(UserError):
    code: AnalyticsErrorCode  # type: ignore[valid-type]


def _errors(error: DomainError) -> list[AnalyticsError]:
    """A report's argument problems; ``field`` names the argument (reports take no input)."""
    return [
        AnalyticsError(
            field=list(p.field) if p.field else None,
            message=p.message,
            code=p.code,
        )
        for p in error.problems
    ]


def _pk(global_id: strawberry.ID | None, type_name: str, field: str) -> int | None:
    if global_id is None:
        return None
    return input_pk(global_id, type_name, field, invalid=reports.AnalyticsErrorCode.INVALID)


def _audience(partner_id: strawberry.ID | None, store_id: strawberry.ID | None) -> reports.Audience:
    return reports.Audience(
        partner_id=_pk(partner_id, "Partner", "partnerId"),
        store_id=_pk(store_id, "Store", "storeId"),
    )


# --- shopping guides -----------------------------------------------------------------------


@strawberry.type(description="A shopping guide (导购): the staff user who recruited members.")
class ShoppingGuide:
    id: strawberry.ID = strawberry.field(description="The guide's StaffUser ID.")
    active: bool
    pk: strawberry.Private[int]
    raw_email: strawberry.Private[str]
    store_pk: strawberry.Private[int | None]
    partner_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: StaffUser) -> ShoppingGuide:
        return cls(
            id=strawberry.ID(encode_id("StaffUser", row.id)),
            active=row.is_active,
            pk=row.id,
            raw_email=row.email,
            store_pk=row.store_id,
            partner_pk=row.partner_id,
        )

    @strawberry.field(description="Masked without pii:read; unmasked reads are audited.")
    def email(self, info: Info) -> str:
        if not info.context.principal.has_scope(PII_SCOPE):
            return mask_email(self.raw_email) or ""
        info.context.audit(AuditEntry("pii.read", "StaffUser", str(self.pk), {"fields": ["email"]}))
        return self.raw_email

    @strawberry.field
    async def store(self, info: Info) -> Store | None:
        return await _store(info, self.store_pk)

    @strawberry.field
    async def partner(self, info: Info) -> Partner | None:
        return await _partner(info, self.partner_pk)


async def _partner(info: Info, pk: int | None) -> Partner | None:
    if pk is None:
        return None
    row = await info.context.loader(partner_loaders.partners_by_pk).load(pk)
    return Partner.from_row(row) if row else None


async def _store(info: Info, pk: int | None) -> Store | None:
    if pk is None:
        return None
    row = await info.context.loader(partner_loaders.stores_by_pk).load(pk)
    return Store.from_row(row) if row else None


async def _guide(info: Info, pk: int | None) -> ShoppingGuide | None:
    if pk is None:
        return None
    row = await info.context.loader(loaders.guides_by_pk).load(pk)
    return ShoppingGuide.from_row(row) if row else None


# --- report rows ---------------------------------------------------------------------------


class Dimension(enum.Enum):
    TOTAL = "total"
    COHORT = "cohort"
    CHANNEL = "channel"
    PARTNER = "partner"
    STORE = "store"
    GUIDE = "guide"
    LEVEL = "level"


_DIMENSIONS: dict[enum.Enum, Dimension] = {
    reports.LtvGroup.COHORT_MONTH: Dimension.COHORT,
    reports.LtvGroup.FIRST_CHANNEL: Dimension.CHANNEL,
    reports.LtvGroup.PARTNER: Dimension.PARTNER,
    reports.LtvGroup.STORE: Dimension.STORE,
    reports.LtvGroup.GUIDE: Dimension.GUIDE,
    reports.LtvGroup.LEVEL: Dimension.LEVEL,
    reports.RepurchaseGroup.FIRST_CHANNEL: Dimension.CHANNEL,
    reports.RepurchaseGroup.PARTNER: Dimension.PARTNER,
    reports.RepurchaseGroup.STORE: Dimension.STORE,
    reports.RepurchaseGroup.LEVEL: Dimension.LEVEL,
    reports.AttributionGroup.STORE: Dimension.STORE,
    reports.AttributionGroup.GUIDE: Dimension.GUIDE,
    reports.AttributionGroup.PARTNER: Dimension.PARTNER,
}
_NODE_NAMES = {
    Dimension.PARTNER: "Partner",
    Dimension.STORE: "Store",
    Dimension.GUIDE: "StaffUser",
    Dimension.LEVEL: "MemberLevel",
}


@strawberry.type(
    description="What a report row is about: a cohort, a channel, or a partner, store, guide "
    "or member level (resolved in one batch per kind); the object fields other than the "
    "row's own dimension are null."
)
class ReportGroup:
    dimension: strawberry.Private[Dimension]
    raw_key: strawberry.Private[Any]

    def _pk_of(self, dimension: Dimension) -> int | None:
        return self.raw_key if self.dimension is dimension else None

    @strawberry.field(
        description="The group: a cohort month (2026-01), a channel (MINI_PROGRAM), or the ID "
        "of the partner, store, guide (a StaffUser ID) or member level. Null for the "
        "customers without one (not recruited, no level) and for a total."
    )
    def key(self) -> str | None:
        if self.raw_key is None:
            return None
        if self.dimension is Dimension.COHORT:
            return f"{self.raw_key.year:04d}-{self.raw_key.month:02d}"
        if self.dimension is Dimension.CHANNEL:
            return str(self.raw_key.name)
        return encode_id(_NODE_NAMES[self.dimension], self.raw_key)

    @strawberry.field(
        description="For people: the partner's, store's or level's name, a guide's masked "
        'email; otherwise the key. "(none)" for the group without one, "total" for a total.'
    )
    async def label(self, info: Info) -> str:
        if self.dimension is Dimension.TOTAL:
            return _TOTAL_LABEL
        if self.raw_key is None:
            return _NONE_LABEL
        named: Any = None
        if self.dimension is Dimension.PARTNER:
            named = await _partner(info, self.raw_key)
        elif self.dimension is Dimension.STORE:
            named = await _store(info, self.raw_key)
        elif self.dimension is Dimension.LEVEL:
            named = await info.context.loader(customer_loaders.levels_by_pk).load(self.raw_key)
        elif self.dimension is Dimension.GUIDE:
            guide = await info.context.loader(loaders.guides_by_pk).load(self.raw_key)
            return (mask_email(guide.email) or "") if guide else str(self.key())
        return named.name if named is not None else str(self.key())

    @strawberry.field(description="FIRST_CHANNEL rows: the channel.")
    def channel(self) -> SalesChannel | None:  # type: ignore[valid-type]
        return self.raw_key if self.dimension is Dimension.CHANNEL else None

    @strawberry.field(description="PARTNER rows: the partner.")
    async def partner(self, info: Info) -> Partner | None:
        return await _partner(info, self._pk_of(Dimension.PARTNER))

    @strawberry.field(description="STORE rows: the store.")
    async def store(self, info: Info) -> Store | None:
        return await _store(info, self._pk_of(Dimension.STORE))

    @strawberry.field(description="GUIDE rows: the guide.")
    async def guide(self, info: Info) -> ShoppingGuide | None:
        return await _guide(info, self._pk_of(Dimension.GUIDE))

    @strawberry.field(description="LEVEL rows: the member level.")
    async def level(
        self, info: Info
    ) -> Annotated[MemberLevel, strawberry.lazy("api.customers.schema")] | None:
        pk = self._pk_of(Dimension.LEVEL)
        if pk is None:
            return None
        found = await info.context.load_node("MemberLevel", pk)
        return found  # type: ignore[return-value]


def _money(amount: Decimal | None, currency: str) -> Money | None:
    return Money.of(amount, currency)


def _cost_visible(info: Info) -> bool:
    """Whether the caller may see what the brand's goods cost, and so any gross margin."""
    return info.context.principal.is_hq


@strawberry.type(description="Customers acquired in the range and all they bought so far.")
class LifetimeValueRow(ReportGroup):
    customers: int = strawberry.field(description="Acquired (first counted order) in the range.")
    orders: int = strawberry.field(description="Their counted orders to date, any channel.")
    revenue: Money = strawberry.field(description="Σ (total - refunded) of those orders.")
    gross_margin: Money | None = strawberry.field(
        description="Revenue minus the cost of what was kept (refunded units give their cost "
        "back)." + _HQ_ONLY
    )
    revenue_per_customer: Money | None = strawberry.field(description="LTV by revenue.")
    gross_margin_per_customer: Money | None = strawberry.field(
        description="LTV by margin; null without customers." + _HQ_ONLY
    )

    @classmethod
    def of(
        cls, dimension: Dimension, row: reports.ValueRow, currency: str, *, cost_visible: bool
    ) -> LifetimeValueRow:
        return cls(
            dimension=dimension,
            raw_key=row.key,
            customers=row.customers,
            orders=row.orders,
            revenue=Money(amount=row.revenue, currency=currency),
            gross_margin=Money(amount=row.gross_margin, currency=currency)
            if cost_visible
            else None,
            revenue_per_customer=_money(row.revenue_per_customer, currency),
            gross_margin_per_customer=_money(row.gross_margin_per_customer, currency)
            if cost_visible
            else None,
        )


@strawberry.type
class LifetimeValueReport:
    rows: list[LifetimeValueRow] = strawberry.field(default_factory=list)
    total: LifetimeValueRow | None = None
    errors: list[AnalyticsError] = strawberry.field(default_factory=list)


@strawberry.type(description="Buyers whose first counted order is in the range, and repeaters.")
class RepurchaseRow(ReportGroup):
    buyers: int
    repeaters: int = strawberry.field(
        description="Buyers with a second counted order within withinDays of the first."
    )
    rate: Decimal | None = strawberry.field(
        description="repeaters / buyers, 4 places (0.4286); null without buyers."
    )
    open_windows: int = strawberry.field(
        description="Buyers whose window had not closed yet (0 with matureOnly)."
    )

    @classmethod
    def of(cls, dimension: Dimension, row: reports.RepurchaseRow) -> RepurchaseRow:
        return cls(
            dimension=dimension,
            raw_key=row.key,
            buyers=row.buyers,
            repeaters=row.repeaters,
            rate=row.rate,
            open_windows=row.open_windows,
        )


@strawberry.type
class RepurchaseReport:
    rows: list[RepurchaseRow] = strawberry.field(
        default_factory=list, description="Per group when groupBy is given; empty otherwise."
    )
    total: RepurchaseRow | None = None
    errors: list[AnalyticsError] = strawberry.field(default_factory=list)


@strawberry.type
class RetentionCell:
    offset: int = strawberry.field(description="Periods after the cohort's (0: its own).")
    customers: int | None = strawberry.field(
        description="Cohort customers with a counted order in that period; null when the "
        "period has not begun."
    )
    rate: Decimal | None = strawberry.field(description="customers / size, 4 places.")


@strawberry.type
class RetentionCohort:
    start: date = strawberry.field(description="The period's first day (a Monday, or the 1st).")
    label: str = strawberry.field(description="2026-01 for a month, 2026-W02 for a week.")
    size: int = strawberry.field(description="Customers whose first counted order is in it.")
    cells: list[RetentionCell]


@strawberry.type
class RetentionReport:
    cohorts: list[RetentionCohort] = strawberry.field(default_factory=list)
    errors: list[AnalyticsError] = strawberry.field(default_factory=list)


@strawberry.type
class RfmSegmentRow:
    segment: str | None = strawberry.field(description="Null: customers not scored yet.")
    customers: int
    average_recency_days: Decimal | None = strawberry.field(
        description="Average days since their last counted order, one place."
    )
    average_orders: Decimal
    average_spent: Money
    scored_at: datetime | None = strawberry.field(description="The latest scoring run's time.")


@strawberry.type
class RfmDistribution:
    segments: list[RfmSegmentRow] = strawberry.field(default_factory=list)
    errors: list[AnalyticsError] = strawberry.field(default_factory=list)


@strawberry.type(description="CAC and ROI of one channel (and partner) over the range.")
class ChannelPerformanceRow:
    channel: SalesChannel | None = strawberry.field(  # type: ignore[valid-type]
        description="Null for the total."
    )
    spend: Money = strawberry.field(
        description="Spend recorded for the channel, pro-rated by days where a record's "
        "period overlaps the range only partly."
    )
    new_customers: int = strawberry.field(
        description="First counted order in the range, on this channel."
    )
    cac: Money | None = strawberry.field(description="spend / newCustomers; null without any.")
    revenue: Money = strawberry.field(description="The new customers' orders in the range.")
    gross_margin: Money | None = strawberry.field(
        description="The margin of those orders." + _HQ_ONLY
    )
    roi: Decimal | None = strawberry.field(
        description="(grossMargin - spend) / spend, 4 places; null without spend." + _HQ_ONLY
    )
    partner_pk: strawberry.Private[int | None]

    @classmethod
    def of(
        cls, row: reports.ChannelRow, currency: str, *, cost_visible: bool
    ) -> ChannelPerformanceRow:
        return cls(
            channel=row.channel,
            spend=Money(amount=row.spend, currency=currency),
            new_customers=row.new_customers,
            cac=_money(row.cac, currency),
            revenue=Money(amount=row.revenue, currency=currency),
            gross_margin=Money(amount=row.gross_margin, currency=currency)
            if cost_visible
            else None,
            roi=row.roi if cost_visible else None,
            partner_pk=row.partner_id,
        )

    @strawberry.field(
        description="byPartner: the partner (spend recorded for it, customers it recruited); "
        "null for HQ's own spend and unrecruited customers."
    )
    async def partner(self, info: Info) -> Partner | None:
        return await _partner(info, self.partner_pk)


@strawberry.type
class ChannelPerformanceReport:
    rows: list[ChannelPerformanceRow] = strawberry.field(default_factory=list)
    total: ChannelPerformanceRow | None = None
    errors: list[AnalyticsError] = strawberry.field(default_factory=list)


@strawberry.type(description="Counted orders attributed to a store, guide or partner.")
class AttributedSalesRow(ReportGroup):
    orders: int
    customers: int
    revenue: Money
    gross_margin: Money | None = strawberry.field(description="Of those orders." + _HQ_ONLY)

    @classmethod
    def of(
        cls, dimension: Dimension, row: reports.AttributedRow, currency: str, *, cost_visible: bool
    ) -> AttributedSalesRow:
        return cls(
            dimension=dimension,
            raw_key=row.key,
            orders=row.orders,
            customers=row.customers,
            revenue=Money(amount=row.revenue, currency=currency),
            gross_margin=Money(amount=row.gross_margin, currency=currency)
            if cost_visible
            else None,
        )


@strawberry.type
class AttributedSalesReport:
    rows: list[AttributedSalesRow] = strawberry.field(default_factory=list)
    errors: list[AnalyticsError] = strawberry.field(default_factory=list)


# --- Customer.metrics ----------------------------------------------------------------------


@strawberry.type(description="RFM scores (quintiles, 5 = best) from the last scoring run.")
class CustomerRfm:
    recency: int | None
    frequency: int | None
    monetary: int | None
    segment: str | None
    scored_at: datetime | None


@strawberry.type(description="A customer's counted orders, kept current with every order.")
class CustomerMetrics:
    orders_count: int
    total_spent: Money
    gross_margin: Money | None = strawberry.field(description="Of the counted orders." + _HQ_ONLY)
    avg_order_value: Money
    first_order_at: datetime | None
    last_order_at: datetime | None
    first_order_channel: str | None
    rfm: CustomerRfm | None = strawberry.field(description="Null until scored.")

    @classmethod
    def from_row(
        cls, row: analytics_models.CustomerMetrics, *, cost_visible: bool
    ) -> CustomerMetrics:
        currency = reports.DEFAULT_CURRENCY
        return cls(
            orders_count=row.orders_count,
            total_spent=Money(amount=row.total_spent, currency=currency),
            gross_margin=Money(amount=row.gross_margin, currency=currency)
            if cost_visible
            else None,
            avg_order_value=Money(amount=row.avg_order_value, currency=currency),
            first_order_at=row.first_order_at,
            last_order_at=row.last_order_at,
            first_order_channel=row.first_order_channel,
            rfm=CustomerRfm(
                recency=row.rfm_recency,
                frequency=row.rfm_frequency,
                monetary=row.rfm_monetary,
                segment=row.rfm_segment,
                scored_at=row.rfm_scored_at,
            )
            if row.rfm_scored_at is not None
            else None,
        )


async def customer_metrics(info: Info, customer_pk: int) -> CustomerMetrics | None:
    """``Customer.metrics``: batched over a page of customers (one statement). Metrics are
    analytics: null without analytics:read, and for members, who must not read how the brand
    rates them ("hibernating", "cannot_lose") even about themselves."""
    principal = info.context.principal
    if principal.is_member or not principal.has_scope(ANALYTICS_READ):
        return None
    row = await info.context.loader(loaders.metrics_by_customer).load(customer_pk)
    return CustomerMetrics.from_row(row, cost_visible=_cost_visible(info)) if row else None


# --- channel spend -------------------------------------------------------------------------


@strawberry.type(description="Money spent acquiring customers on a channel in a period.")
class ChannelSpend(Node):
    channel: SalesChannel  # type: ignore[valid-type]
    period_start: date
    period_end: date = strawberry.field(description="Inclusive.")
    amount: Money
    note: str | None
    recorded_by: str | None
    created_at: datetime
    partner_pk: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: analytics_models.ChannelSpend) -> ChannelSpend:
        return cls(
            id=strawberry.ID(encode_id("ChannelSpend", row.id)),
            channel=SalesChannelValue(row.channel),
            period_start=row.period_start,
            period_end=row.period_end,
            amount=Money(amount=row.amount, currency=row.currency),
            note=row.note,
            recorded_by=row.recorded_by,
            created_at=row.created_at,
            partner_pk=row.partner_id,
        )

    @strawberry.field(description="The partner it was spent for; null for HQ's own.")
    async def partner(self, info: Info) -> Partner | None:
        return await _partner(info, self.partner_pk)


async def _load_spends(ctx: Context, pks: Sequence[int]) -> list[ChannelSpend | None]:
    # ``node`` only needs a token: spend is analytics, readable with analytics:read alone.
    if not ctx.principal.has_scope(ANALYTICS_READ):
        return [None] * len(pks)
    rows = await ctx.loader(loaders.spends_by_pk).load_many(pks)
    return [ChannelSpend.from_row(r) if r else None for r in rows]


@strawberry.input
class ChannelSpendFilter:
    channels: list[SalesChannel] | None = None  # type: ignore[valid-type]
    partner_id: strawberry.ID | None = None
    overlapping_from: date | None = strawberry.field(
        default=None, name="from", description="Periods ending on or after this day."
    )
    overlapping_to: date | None = strawberry.field(
        default=None, name="to", description="Periods starting on or before this day."
    )


@strawberry.input
class ChannelSpendRecordInput:
    channel: SalesChannel  # type: ignore[valid-type]
    partner_id: strawberry.ID | None = strawberry.field(
        default=None, description="Spent for this partner's channel; none for HQ's own."
    )
    period_start: date = strawberry.field(description="From 2000-01-01 to 2100-12-31.")
    period_end: date = strawberry.field(
        description="Inclusive; before the same date a year after periodStart, and at the "
        "latest 2100-12-31."
    )
    amount: Decimal = strawberry.field(description="More than 0, at most 100000000.00.")
    currency: str = reports.DEFAULT_CURRENCY
    note: str | None = None
    idempotency_key: str = strawberry.field(
        description="A retry with the same key returns the first record."
    )


@strawberry.type
class ChannelSpendRecordPayload:
    spend: ChannelSpend | None = None
    created: bool = strawberry.field(
        default=False, description="False when a retry returned the first record."
    )
    errors: list[AnalyticsError] = strawberry.field(default_factory=list)


# --- queries and mutations -----------------------------------------------------------------

_SCOPE_NOTE = (
    " Needs analytics:read; a partner sees only the customers it recruited. Periods and "
    "days are China Standard Time (UTC+8), from 2000-01-01 to 2100-12-31."
)


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(
        permission_classes=[requires(ANALYTICS_READ)],
        description="LTV: customers acquired (first counted order) in [acquiredFrom, "
        "acquiredTo), at most three years, and their cumulative revenue and gross margin to "
        "date, per group. Only orders in `currency` are summed." + _SCOPE_NOTE,
    )
    async def customer_lifetime_value(
        self,
        info: Info,
        group_by: LifetimeValueGroupBy,  # type: ignore[valid-type]
        acquired_from: datetime,
        acquired_to: datetime,
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
        currency: str = reports.DEFAULT_CURRENCY,
    ) -> LifetimeValueReport:
        ctx = info.context
        try:
            audience = _audience(partner_id, store_id)
            async with ctx.db.read() as session:
                report = await reports.lifetime_value(
                    session,
                    ctx.principal,
                    group_by=group_by,
                    acquired_from=acquired_from,
                    acquired_to=acquired_to,
                    audience=audience,
                    currency=currency,
                )
        except DomainError as error:
            return LifetimeValueReport(errors=_errors(error))
        dimension, visible = _DIMENSIONS[group_by], _cost_visible(info)
        return LifetimeValueReport(
            rows=[
                LifetimeValueRow.of(dimension, r, currency, cost_visible=visible)
                for r in report.rows
            ],
            total=LifetimeValueRow.of(
                Dimension.TOTAL, report.total, currency, cost_visible=visible
            ),
        )

    @strawberry.field(
        permission_classes=[requires(ANALYTICS_READ)],
        description="复购率: of the buyers whose first counted order is in [firstOrderFrom, "
        "firstOrderTo), the share with a second counted order within `withinDays` (1-730) of "
        "the first. Buyers whose window is still open ARE included by default (as repeaters "
        "only if they already came back; see openWindows); matureOnly: true leaves them "
        "out." + _SCOPE_NOTE,
    )
    async def repurchase_rate(
        self,
        info: Info,
        first_order_from: datetime,
        first_order_to: datetime,
        within_days: int = 90,
        group_by: RepurchaseGroupBy | None = None,  # type: ignore[valid-type]
        mature_only: bool = False,
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
    ) -> RepurchaseReport:
        ctx = info.context
        try:
            audience = _audience(partner_id, store_id)
            async with ctx.db.read() as session:
                report = await reports.repurchase_rate(
                    session,
                    ctx.principal,
                    first_order_from=first_order_from,
                    first_order_to=first_order_to,
                    now=utcnow(),
                    within_days=within_days,
                    group_by=group_by,
                    mature_only=mature_only,
                    audience=audience,
                )
        except DomainError as error:
            return RepurchaseReport(errors=_errors(error))
        dimension = _DIMENSIONS[group_by] if group_by is not None else Dimension.TOTAL
        return RepurchaseReport(
            rows=[RepurchaseRow.of(dimension, r) for r in report.rows],
            total=RepurchaseRow.of(Dimension.TOTAL, report.total),
        )

    @strawberry.field(
        permission_classes=[requires(ANALYTICS_READ)],
        description="Cohort retention: customers acquired in [from, to) by week or month, and "
        "for each of the next `periods` (1-24) periods how many bought again." + _SCOPE_NOTE,
    )
    async def cohort_retention(
        self,
        info: Info,
        period: RetentionPeriod,  # type: ignore[valid-type]
        start: Annotated[datetime, strawberry.argument(name="from")],
        end: Annotated[datetime, strawberry.argument(name="to")],
        periods: int = 6,
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
    ) -> RetentionReport:
        ctx = info.context
        try:
            audience = _audience(partner_id, store_id)
            async with ctx.db.read() as session:
                report = await reports.cohort_retention(
                    session,
                    ctx.principal,
                    period=period,
                    start=start,
                    end=end,
                    now=utcnow(),
                    periods=periods,
                    audience=audience,
                )
        except DomainError as error:
            return RetentionReport(errors=_errors(error))
        return RetentionReport(
            cohorts=[
                RetentionCohort(
                    start=c.start,
                    label=c.label,
                    size=c.size,
                    cells=[
                        RetentionCell(offset=x.offset, customers=x.customers, rate=x.rate)
                        for x in c.cells
                    ],
                )
                for c in report.cohorts
            ]
        )

    @strawberry.field(
        permission_classes=[requires(ANALYTICS_READ)],
        description="Customers per RFM segment, as the last scoring run left them, with "
        "their average recency (days), orders and spend." + _SCOPE_NOTE,
    )
    async def rfm_distribution(
        self,
        info: Info,
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
    ) -> RfmDistribution:
        ctx = info.context
        currency = reports.DEFAULT_CURRENCY
        try:
            audience = _audience(partner_id, store_id)
            async with ctx.db.read() as session:
                rows = await reports.rfm_distribution(
                    session, ctx.principal, now=utcnow(), audience=audience
                )
        except DomainError as error:
            return RfmDistribution(errors=_errors(error))
        return RfmDistribution(
            segments=[
                RfmSegmentRow(
                    segment=r.segment,
                    customers=r.customers,
                    average_recency_days=r.average_recency_days,
                    average_orders=r.average_orders,
                    average_spent=Money(amount=r.average_spent, currency=currency),
                    scored_at=r.scored_at,
                )
                for r in rows
            ]
        )

    @strawberry.field(
        permission_classes=[requires(ANALYTICS_READ)],
        description="CAC and ROI per channel (byPartner: per channel and partner) over the "
        "days [from, to], both inclusive. Spend is pro-rated by days when a record overlaps "
        "the range partly; new customers made their first counted order in the range on the "
        "channel; revenue and margin are theirs in the range. A partner sees its own spend "
        "and customers." + _SCOPE_NOTE,
    )
    async def channel_performance(
        self,
        info: Info,
        start: Annotated[date, strawberry.argument(name="from")],
        end: Annotated[date, strawberry.argument(name="to")],
        by_partner: bool = False,
        partner_id: strawberry.ID | None = None,
        currency: str = reports.DEFAULT_CURRENCY,
    ) -> ChannelPerformanceReport:
        ctx = info.context
        try:
            partner = _pk(partner_id, "Partner", "partnerId")
            async with ctx.db.read() as session:
                report = await reports.channel_performance(
                    session,
                    ctx.principal,
                    start=start,
                    end=end,
                    by_partner=by_partner,
                    partner_id=partner,
                    currency=currency,
                )
        except DomainError as error:
            return ChannelPerformanceReport(errors=_errors(error))
        visible = _cost_visible(info)
        return ChannelPerformanceReport(
            rows=[ChannelPerformanceRow.of(r, currency, cost_visible=visible) for r in report.rows],
            total=ChannelPerformanceRow.of(report.total, currency, cost_visible=visible),
        )

    @strawberry.field(
        permission_classes=[requires(ANALYTICS_READ)],
        description="Lifetime attribution (终身归属): counted orders placed in [from, to) "
        "attributed to each store, guide or partner, with their customers, revenue and gross "
        "margin. A partner sees only the orders attributed to it." + _SCOPE_NOTE,
    )
    async def attributed_sales(
        self,
        info: Info,
        group_by: AttributedSalesGroupBy,  # type: ignore[valid-type]
        start: Annotated[datetime, strawberry.argument(name="from")],
        end: Annotated[datetime, strawberry.argument(name="to")],
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
        guide_id: strawberry.ID | None = None,
        currency: str = reports.DEFAULT_CURRENCY,
    ) -> AttributedSalesReport:
        ctx = info.context
        try:
            where = reports.AttributionFilter(
                partner_id=_pk(partner_id, "Partner", "partnerId"),
                store_id=_pk(store_id, "Store", "storeId"),
                guide_id=_pk(guide_id, "StaffUser", "guideId"),
            )
            async with ctx.db.read() as session:
                rows = await reports.attributed_sales(
                    session,
                    ctx.principal,
                    group_by=group_by,
                    start=start,
                    end=end,
                    where=where,
                    currency=currency,
                )
        except DomainError as error:
            return AttributedSalesReport(errors=_errors(error))
        dimension, visible = _DIMENSIONS[group_by], _cost_visible(info)
        return AttributedSalesReport(
            rows=[AttributedSalesRow.of(dimension, r, currency, cost_visible=visible) for r in rows]
        )

    @strawberry.field(
        permission_classes=[requires(ANALYTICS_READ)],
        description="Channel spend records, oldest first (reverse: newest first). HQ sees "
        "all; a partner the spend recorded for it.",
    )
    async def channel_spends(
        self,
        info: Info,
        filter: ChannelSpendFilter | None = None,
        reverse: bool = False,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[ChannelSpend]:
        ctx = info.context
        request = page_request(info, first, after, last, before)
        where = None
        if filter is not None:
            where = reports.SpendFilter(
                channels=filter.channels or (),
                # A malformed id is a top-level BAD_USER_INPUT, as in every connection filter.
                partner_id=decode_id_of(filter.partner_id, "Partner")
                if filter.partner_id
                else None,
                overlapping_from=filter.overlapping_from,
                overlapping_to=filter.overlapping_to,
            )
        return await root_connection(
            ctx,
            reports.channel_spends_query(ctx.principal, where),
            reports.SPEND_KEYSET,
            request,
            ChannelSpend.from_row,
            reverse=reverse,
        )


@strawberry.type
class AnalyticsMutation:
    @strawberry.mutation(
        permission_classes=[requires("spend:write")],
        description="Record channel spend (HQ only), for CAC and ROI. Idempotent per key.",
    )
    async def channel_spend_record(
        self, info: Info, input: ChannelSpendRecordInput
    ) -> ChannelSpendRecordPayload:
        async def change(work: UnitOfWork) -> ChannelSpendRecordPayload:
            # Before the input is read: a partner-level caller learns nothing from it.
            reports.require_hq(work.principal)
            draft = reports.SpendDraft(
                channel=input.channel,
                partner_id=_pk(input.partner_id, "Partner", "partnerId"),
                period_start=input.period_start,
                period_end=input.period_end,
                amount=input.amount,
                currency=input.currency,
                note=input.note,
                idempotency_key=input.idempotency_key,
            )
            result = await reports.record_channel_spend(
                work.session, work.principal, draft, now=utcnow()
            )
            work.touched("ChannelSpend", result.spend.id)
            return ChannelSpendRecordPayload(
                spend=ChannelSpend.from_row(result.spend), created=result.created
            )

        return await run_mutation(info, ChannelSpendRecordPayload, change)


__all__ = ["AnalyticsQuery", "ChannelSpend", "CustomerMetrics", "customer_metrics"]


schema_parts = SchemaParts(
    query=AnalyticsQuery,
    mutation=AnalyticsMutation,
    types=[ChannelSpend],
    nodes={"ChannelSpend": _load_spends},
)
