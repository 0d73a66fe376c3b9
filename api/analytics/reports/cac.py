"""CAC and ROI per channel (and partner): the spend over a range of days against the customers
it acquired and what they bought."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import and_, func, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.analytics.amounts import ZERO, cents, ratio, yuan
from api.analytics.arguments import DEFAULT_CURRENCY, check_currency, check_days, raise_problems
from api.analytics.business_calendar import day_start
from api.analytics.models import ChannelSpend
from api.analytics.reports.counted import Audience, acquired_orders, cents_sum
from api.analytics.sql import dialect_of
from api.auth.principal import Principal
from api.auth.scope import restrict
from api.catalog.models import SalesChannel


@dataclass(frozen=True, slots=True)
class ChannelRow:
    channel: SalesChannel | None  # None: the total over every channel
    partner_id: int | None  # by partner: the spend's partner / the customers' recruiter
    spend: Decimal  # pro-rated to the range, in cents
    new_customers: int
    revenue: Decimal  # the new customers' counted orders placed in the range
    gross_margin: Decimal
    exact_spend: Decimal  # unrounded, for the ratios

    @property
    def cac(self) -> Decimal | None:
        """Spend per new customer; None without new customers."""
        return cents(self.exact_spend / self.new_customers) if self.new_customers else None

    @property
    def roi(self) -> Decimal | None:
        """(gross margin - spend) / spend; None without spend."""
        return ratio(self.gross_margin - self.exact_spend, self.exact_spend)


@dataclass(frozen=True, slots=True)
class ChannelPerformance:
    start: date
    end: date
    by_partner: bool
    currency: str
    rows: list[ChannelRow]

    @property
    def total(self) -> ChannelRow:
        exact = sum((r.exact_spend for r in self.rows), Decimal(0))
        return ChannelRow(
            None,
            None,
            cents(exact),
            sum(r.new_customers for r in self.rows),
            sum((r.revenue for r in self.rows), ZERO),
            sum((r.gross_margin for r in self.rows), ZERO),
            exact,
        )


async def channel_performance(
    session: AsyncSession,
    principal: Principal,
    *,
    start: date,
    end: date,
    by_partner: bool = False,
    partner_id: int | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> ChannelPerformance:
    """CAC and ROI per channel (and partner) over the business days [start, end] (both
    inclusive).

    Spend: every record overlapping the range, pro-rated by days when it overlaps only
    partly (a 1 January - 31 March record of 9,000 counts 5,900 for February and March:
    59 of its 90 days). New customers: those whose first counted order (in any currency)
    falls in the range, on that channel; by partner, the partner that recruited them.
    Revenue and gross margin: what those new customers bought in the range, on any channel,
    in ``currency``. Two statements: the spend records, then the customers.
    """
    raise_problems(check_days(start, end, "from", "to") + check_currency(currency))
    spend = await _spend(session, principal, start, end, by_partner, partner_id, currency)
    acquired = await _acquired(session, principal, start, end, by_partner, partner_id, currency)
    rows = []
    for channel, partner in sorted(
        spend.keys() | acquired.keys(), key=lambda g: (g[0].value, g[1] is not None, g[1] or 0)
    ):
        exact = spend.get((channel, partner), Decimal(0))
        n, revenue, margin = acquired.get((channel, partner), (0, ZERO, ZERO))
        rows.append(ChannelRow(channel, partner, cents(exact), n, revenue, margin, exact))
    return ChannelPerformance(start, end, by_partner, currency, rows)


# A row's group: the channel, and the partner when the report is by partner (else None).
Group = tuple[SalesChannel, int | None]


async def _spend(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    by_partner: bool,
    partner_id: int | None,
    currency: str,
) -> dict[Group, Decimal]:
    """The spend of every record overlapping [start, end] in ``currency``, pro-rated by days,
    per group, unrounded. One statement."""
    spend_stmt = restrict(
        select(
            ChannelSpend.channel,
            ChannelSpend.partner_id,
            ChannelSpend.period_start,
            ChannelSpend.period_end,
            ChannelSpend.amount,
        ).where(
            ChannelSpend.currency == currency,
            ChannelSpend.period_start <= end,
            ChannelSpend.period_end >= start,
        ),
        ChannelSpend,
        principal,
    )
    if partner_id is not None:
        spend_stmt = spend_stmt.where(ChannelSpend.partner_id == partner_id)
    spend: dict[Group, Decimal] = {}
    for channel, spender, period_start_, period_end_, amount in await session.execute(spend_stmt):
        days = (period_end_ - period_start_).days + 1
        overlap = (min(period_end_, end) - max(period_start_, start)).days + 1
        group = (SalesChannel(channel), spender if by_partner else None)
        spend[group] = spend.get(group, Decimal(0)) + Decimal(amount) * overlap / days
    return spend


async def _acquired(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    by_partner: bool,
    partner_id: int | None,
    currency: str,
) -> dict[Group, tuple[int, Decimal, Decimal]]:
    """Per group, the customers acquired in [start, end] (first counted order, in any
    currency) and the revenue and gross margin of their orders in the range in
    ``currency``. One statement."""
    since, until = day_start(start), day_start(end + timedelta(days=1))
    counted = acquired_orders(
        principal, Audience(partner_id=partner_id), dialect_of(session), since, until
    )
    first = (
        select(counted.c.customer_id, counted.c.channel, counted.c.partner_id)
        .where(counted.c.seq == 1)
        .subquery("acquired")
    )
    grouping = (first.c.channel, first.c.partner_id) if by_partner else (first.c.channel,)
    result = await session.execute(
        select(
            first.c.channel,
            first.c.partner_id if by_partner else null(),
            func.count(func.distinct(first.c.customer_id)),
            cents_sum(counted.c.revenue, counted.c.currency, currency),
            cents_sum(counted.c.margin, counted.c.currency, currency),
        )
        .select_from(first)
        .join(
            counted,
            and_(
                counted.c.customer_id == first.c.customer_id,
                counted.c.placed_at >= since,
                counted.c.placed_at < until,
            ),
        )
        .group_by(*grouping)
    )
    return {
        (channel, partner): (n, yuan(revenue), yuan(margin))
        for channel, partner, n, revenue, margin in result
    }
