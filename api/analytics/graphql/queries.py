"""The analytics reports and the channel spend list."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import strawberry

from api.analytics import arguments, spend
from api.analytics.graphql.channel_spend import ChannelSpend, ChannelSpendFilter
from api.analytics.graphql.inputs import (
    ANALYTICS_READ,
    AttributedSalesGroupBy,
    LifetimeValueGroupBy,
    RepurchaseGroupBy,
    RetentionPeriod,
    audience_of,
    key_of,
    report_errors,
    sees_cost,
)
from api.analytics.graphql.types import (
    DIMENSIONS,
    AttributedSalesReport,
    AttributedSalesRow,
    ChannelPerformanceReport,
    ChannelPerformanceRow,
    Dimension,
    LifetimeValueReport,
    LifetimeValueRow,
    RepurchaseReport,
    RepurchaseRow,
    RetentionCell,
    RetentionCohort,
    RetentionReport,
    RfmDistribution,
    RfmSegmentRow,
)
from api.analytics.reports import attributed_sales, cac, ltv, repurchase, retention, rfm
from api.db import utcnow
from api.errors import DomainError
from api.graphql.context import Info
from api.graphql.ids import decode_id_of
from api.graphql.money import Money
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Rows, connection

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
        group_by: LifetimeValueGroupBy,  # type: ignore[valid-type]  # a strawberry.enum value
        acquired_from: datetime,
        acquired_to: datetime,
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
        currency: str = arguments.DEFAULT_CURRENCY,
    ) -> LifetimeValueReport:
        ctx = info.context
        try:
            audience = audience_of(partner_id, store_id)
            async with ctx.db.read() as session:
                report = await ltv.lifetime_value(
                    session,
                    ctx.principal,
                    group_by=group_by,
                    acquired_from=acquired_from,
                    acquired_to=acquired_to,
                    audience=audience,
                    currency=currency,
                )
        except DomainError as error:
            return LifetimeValueReport(errors=report_errors(error))
        dimension, visible = DIMENSIONS[group_by], sees_cost(info)
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
        group_by: RepurchaseGroupBy | None = None,  # type: ignore[valid-type]  # a strawberry.enum value
        mature_only: bool = False,
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
    ) -> RepurchaseReport:
        ctx = info.context
        try:
            audience = audience_of(partner_id, store_id)
            async with ctx.db.read() as session:
                report = await repurchase.repurchase_rate(
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
            return RepurchaseReport(errors=report_errors(error))
        grouped = report.group_by  # the argument, typed as the report's enum
        dimension = DIMENSIONS[grouped] if grouped is not None else Dimension.TOTAL
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
        period: RetentionPeriod,  # type: ignore[valid-type]  # a strawberry.enum value
        start: Annotated[datetime, strawberry.argument(name="from")],
        end: Annotated[datetime, strawberry.argument(name="to")],
        periods: int = 6,
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
    ) -> RetentionReport:
        ctx = info.context
        try:
            audience = audience_of(partner_id, store_id)
            async with ctx.db.read() as session:
                report = await retention.cohort_retention(
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
            return RetentionReport(errors=report_errors(error))
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
        currency = arguments.DEFAULT_CURRENCY
        try:
            audience = audience_of(partner_id, store_id)
            async with ctx.db.read() as session:
                rows = await rfm.rfm_distribution(
                    session, ctx.principal, now=utcnow(), audience=audience
                )
        except DomainError as error:
            return RfmDistribution(errors=report_errors(error))
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
        currency: str = arguments.DEFAULT_CURRENCY,
    ) -> ChannelPerformanceReport:
        ctx = info.context
        try:
            partner = key_of(partner_id, "Partner", "partnerId")
            async with ctx.db.read() as session:
                report = await cac.channel_performance(
                    session,
                    ctx.principal,
                    start=start,
                    end=end,
                    by_partner=by_partner,
                    partner_id=partner,
                    currency=currency,
                )
        except DomainError as error:
            return ChannelPerformanceReport(errors=report_errors(error))
        visible = sees_cost(info)
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
        group_by: AttributedSalesGroupBy,  # type: ignore[valid-type]  # a strawberry.enum value
        start: Annotated[datetime, strawberry.argument(name="from")],
        end: Annotated[datetime, strawberry.argument(name="to")],
        partner_id: strawberry.ID | None = None,
        store_id: strawberry.ID | None = None,
        guide_id: strawberry.ID | None = None,
        currency: str = arguments.DEFAULT_CURRENCY,
    ) -> AttributedSalesReport:
        ctx = info.context
        try:
            where = attributed_sales.AttributionFilter(
                partner_id=key_of(partner_id, "Partner", "partnerId"),
                store_id=key_of(store_id, "Store", "storeId"),
                guide_id=key_of(guide_id, "StaffUser", "guideId"),
            )
            async with ctx.db.read() as session:
                rows = await attributed_sales.attributed_sales(
                    session,
                    ctx.principal,
                    group_by=group_by,
                    start=start,
                    end=end,
                    where=where,
                    currency=currency,
                )
        except DomainError as error:
            return AttributedSalesReport(errors=report_errors(error))
        dimension, visible = DIMENSIONS[group_by], sees_cost(info)
        return AttributedSalesReport(
            rows=[AttributedSalesRow.of(dimension, r, currency, cost_visible=visible) for r in rows]
        )

    @connection(
        Connection[ChannelSpend],
        permission_classes=[requires(ANALYTICS_READ)],
        description="Channel spend records, oldest first (reverse: newest first). HQ sees "
        "all; a partner the spend recorded for it.",
    )
    async def channel_spends(
        self,
        info: Info,
        filter: ChannelSpendFilter | None = None,
        reverse: bool = False,
    ) -> Rows[ChannelSpend]:
        ctx = info.context
        where = None
        if filter is not None:
            where = spend.SpendFilter(
                channels=filter.channels or (),
                # A malformed id is a top-level BAD_USER_INPUT, as in every connection filter.
                partner_id=decode_id_of(filter.partner_id, "Partner")
                if filter.partner_id
                else None,
                overlapping_from=filter.overlapping_from,
                overlapping_to=filter.overlapping_to,
            )
        return Rows(
            spend.channel_spends_query(ctx.principal, where),
            spend.SPEND_KEYSET,
            ChannelSpend.from_row,
            reverse=reverse,
        )
