"""The report rows and what each is about (``ReportGroup``: a cohort, a channel, a partner,
store, guide or member level, resolved in one batch per kind)."""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from api.analytics import loaders
from api.analytics.graphql.inputs import (
    HQ_ONLY,
    AnalyticsError,
)
from api.analytics.reports import attributed_sales, ltv, repurchase
from api.analytics.reports.cac import ChannelRow
from api.audit.service import AuditEntry
from api.auth.models import StaffUser
from api.auth.pii import PII_SCOPE, mask_email
from api.catalog.schema import SalesChannel
from api.customers import loaders as customer_loaders
from api.graphql.context import Info
from api.graphql.ids import encode_id
from api.graphql.money import Money
from api.partners import loaders as partner_loaders
from api.partners.schema import Partner, Store

if TYPE_CHECKING:
    from api.customers.graphql.types import MemberLevel


_NONE_LABEL = "(none)"
_TOTAL_LABEL = "total"


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
        return await store_of(info, self.store_pk)

    @strawberry.field
    async def partner(self, info: Info) -> Partner | None:
        return await partner_of(info, self.partner_pk)


async def partner_of(info: Info, pk: int | None) -> Partner | None:
    if pk is None:
        return None
    row = await info.context.loader(partner_loaders.partners_by_pk).load(pk)
    return Partner.from_row(row) if row else None


async def store_of(info: Info, pk: int | None) -> Store | None:
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


DIMENSIONS: dict[enum.Enum, Dimension] = {
    ltv.LtvGroup.COHORT_MONTH: Dimension.COHORT,
    ltv.LtvGroup.FIRST_CHANNEL: Dimension.CHANNEL,
    ltv.LtvGroup.PARTNER: Dimension.PARTNER,
    ltv.LtvGroup.STORE: Dimension.STORE,
    ltv.LtvGroup.GUIDE: Dimension.GUIDE,
    ltv.LtvGroup.LEVEL: Dimension.LEVEL,
    repurchase.RepurchaseGroup.FIRST_CHANNEL: Dimension.CHANNEL,
    repurchase.RepurchaseGroup.PARTNER: Dimension.PARTNER,
    repurchase.RepurchaseGroup.STORE: Dimension.STORE,
    repurchase.RepurchaseGroup.LEVEL: Dimension.LEVEL,
    attributed_sales.AttributionGroup.STORE: Dimension.STORE,
    attributed_sales.AttributionGroup.GUIDE: Dimension.GUIDE,
    attributed_sales.AttributionGroup.PARTNER: Dimension.PARTNER,
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
            named = await partner_of(info, self.raw_key)
        elif self.dimension is Dimension.STORE:
            named = await store_of(info, self.raw_key)
        elif self.dimension is Dimension.LEVEL:
            named = await info.context.loader(customer_loaders.levels_by_pk).load(self.raw_key)
        elif self.dimension is Dimension.GUIDE:
            guide = await info.context.loader(loaders.guides_by_pk).load(self.raw_key)
            return (mask_email(guide.email) or "") if guide else str(self.key())
        return named.name if named is not None else str(self.key())

    @strawberry.field(description="FIRST_CHANNEL rows: the channel.")
    def channel(self) -> SalesChannel | None:  # type: ignore[valid-type]  # a strawberry.enum value
        return self.raw_key if self.dimension is Dimension.CHANNEL else None

    @strawberry.field(description="PARTNER rows: the partner.")
    async def partner(self, info: Info) -> Partner | None:
        return await partner_of(info, self._pk_of(Dimension.PARTNER))

    @strawberry.field(description="STORE rows: the store.")
    async def store(self, info: Info) -> Store | None:
        return await store_of(info, self._pk_of(Dimension.STORE))

    @strawberry.field(description="GUIDE rows: the guide.")
    async def guide(self, info: Info) -> ShoppingGuide | None:
        return await _guide(info, self._pk_of(Dimension.GUIDE))

    @strawberry.field(description="LEVEL rows: the member level.")
    async def level(
        self, info: Info
    ) -> Annotated[MemberLevel, strawberry.lazy("api.customers.graphql.types")] | None:
        pk = self._pk_of(Dimension.LEVEL)
        if pk is None:
            return None
        return await info.context.load_node("MemberLevel", pk)


def _money(amount: Decimal | None, currency: str) -> Money | None:
    return Money.of(amount, currency)


@strawberry.type(description="Customers acquired in the range and all they bought so far.")
class LifetimeValueRow(ReportGroup):
    customers: int = strawberry.field(description="Acquired (first counted order) in the range.")
    orders: int = strawberry.field(description="Their counted orders to date, any channel.")
    revenue: Money = strawberry.field(description="Σ (total - refunded) of those orders.")
    gross_margin: Money | None = strawberry.field(
        description="Revenue minus the cost of what was kept (refunded units give their cost "
        "back)." + HQ_ONLY
    )
    revenue_per_customer: Money | None = strawberry.field(description="LTV by revenue.")
    gross_margin_per_customer: Money | None = strawberry.field(
        description="LTV by margin; null without customers." + HQ_ONLY
    )

    @classmethod
    def of(
        cls, dimension: Dimension, row: ltv.ValueRow, currency: str, *, cost_visible: bool
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
    def of(cls, dimension: Dimension, row: repurchase.RepurchaseRow) -> RepurchaseRow:
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
    channel: SalesChannel | None = strawberry.field(  # type: ignore[valid-type]  # a strawberry.enum value
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
        description="The margin of those orders." + HQ_ONLY
    )
    roi: Decimal | None = strawberry.field(
        description="(grossMargin - spend) / spend, 4 places; null without spend." + HQ_ONLY
    )
    partner_pk: strawberry.Private[int | None]

    @classmethod
    def of(cls, row: ChannelRow, currency: str, *, cost_visible: bool) -> ChannelPerformanceRow:
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
        return await partner_of(info, self.partner_pk)


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
    gross_margin: Money | None = strawberry.field(description="Of those orders." + HQ_ONLY)

    @classmethod
    def of(
        cls,
        dimension: Dimension,
        row: attributed_sales.AttributedRow,
        currency: str,
        *,
        cost_visible: bool,
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
