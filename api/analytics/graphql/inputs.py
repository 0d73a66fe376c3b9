"""What the analytics fields take and answer with besides rows: the enums of their arguments,
global ids turned into keys, their errors, and who may see the brand's cost."""

from __future__ import annotations

import strawberry

from api.analytics import arguments, business_calendar
from api.analytics.reports import attributed_sales, ltv, repurchase
from api.analytics.reports.counted import Audience
from api.errors import DomainError
from api.graphql.context import Info
from api.graphql.errors import UserError
from api.graphql.ids import input_pk

ANALYTICS_READ = "analytics:read"

AnalyticsErrorCode = strawberry.enum(arguments.AnalyticsErrorCode)
LifetimeValueGroupBy = strawberry.enum(
    ltv.LtvGroup,
    name="LifetimeValueGroupBy",
    description="COHORT_MONTH and FIRST_CHANNEL: the month and channel of the first counted "
    "order; PARTNER, STORE, GUIDE: who recruited the customer; LEVEL: the current level.",
)
RepurchaseGroupBy = strawberry.enum(repurchase.RepurchaseGroup, name="RepurchaseGroupBy")
RetentionPeriod = strawberry.enum(
    business_calendar.Period,
    name="RetentionPeriod",
    description="Calendar weeks (Monday first) or months, in China Standard Time (UTC+8).",
)
AttributedSalesGroupBy = strawberry.enum(
    attributed_sales.AttributionGroup, name="AttributedSalesGroupBy"
)
HQ_ONLY = " HQ only (it reveals the brand's cost): null for others."


@strawberry.type
class AnalyticsError(UserError):
    code: AnalyticsErrorCode  # type: ignore[valid-type]  # a strawberry.enum value


def report_errors(error: DomainError) -> list[AnalyticsError]:
    """A report's argument problems; ``field`` names the argument (reports take no input)."""
    return [
        AnalyticsError(
            field=list(p.field) if p.field else None,
            message=p.message,
            code=p.code,
        )
        for p in error.problems
    ]


def key_of(global_id: strawberry.ID | None, type_name: str, field: str) -> int | None:
    if global_id is None:
        return None
    return input_pk(global_id, type_name, field, invalid=arguments.AnalyticsErrorCode.INVALID)


def audience_of(partner_id: strawberry.ID | None, store_id: strawberry.ID | None) -> Audience:
    return Audience(
        partner_id=key_of(partner_id, "Partner", "partnerId"),
        store_id=key_of(store_id, "Store", "storeId"),
    )


def sees_cost(info: Info) -> bool:
    """Whether the caller may see what the brand's goods cost, and so any gross margin."""
    return info.context.principal.is_hq
