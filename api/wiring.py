"""The composition root: every reaction across domains, in one table, with the settings bound.

Read this first to know what a change sets off. Nothing registers itself at import time:
``build(settings)`` is called once by the app (``api/app.py``, carried in each request's
context as ``context.wiring``) and by each CLI job, and hands every domain what it needs as a
parameter. Settings reach a domain only this way or as an argument, never by reading the
environment.

What an order does, in the order it happens (all inside the order's one transaction):

* **placing it** (``api/orders/placing.py``): inventory takes or reserves the stock,
  coupons are redeemed, points are spent, channel violations are recorded; a sale handed over
  at once earns points and counts toward the member's level (``complete_sale``). These steps
  decide the order itself (what it costs, whether it can be placed), so the orders domain
  calls them directly;
* **picking it up, cancelling, expiring, refunding it** (``api/orders/lifecycle/``): the same
  domains undo or complete their part (stock released or sold, coupons restored or voided,
  points earned or given back);
* **then, whenever orders change** (created, completed, cancelled, expired, refunded,
  imported, withdrawn), the reactions below run in this order. The orders domain does not
  know them.

The other tables of the project: which model each partner-scoped table is owned by
(``api/ownership.py``, read by ``restrict``), and the GraphQL schema's parts and node types
(``api/graphql/schema.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from api.analytics.attribution import AttributionPolicy
from api.analytics.reactions import MetricsAndAttribution, MetricsMergeStep
from api.coupons.merge import CouponMergeStep
from api.customers.reactions import CustomersWiring
from api.growth.merge_step import TouchpointMergeStep
from api.growth.system_touches import record_member_registered, record_order_touchpoints
from api.loyalty.merge import PointsMergeStep
from api.orders.merge import OrderMergeStep
from api.orders.reactions import OrdersWiring
from api.referrals.first_orders import FirstOrderRewards
from api.referrals.merge_step import ReferralMergeStep
from api.settings import Settings


@dataclass(frozen=True, slots=True)
class Wiring:
    settings: Settings
    orders: OrdersWiring
    customers: CustomersWiring


def build(settings: Settings) -> Wiring:
    return Wiring(
        settings=settings,
        orders=OrdersWiring(
            settings=settings,
            reactions=(
                # MARKETPLACE_PURCHASE / FIRST_ORDER / REPURCHASE touchpoints; an undone
                # order's touch withdrawn. First: attribution must not count this order's
                # own touch as the touch that won it.
                record_order_touchpoints,
                # The changed customers' metrics (LTV, RFM inputs); lifetime attribution of
                # new orders to the recruiting (or last-touch) store and guide.
                MetricsAndAttribution(AttributionPolicy.from_settings(settings)),
                # An invitee's first completed private order rewards the inviter; an undone
                # first order takes the reward back.
                FirstOrderRewards(settings),
            ),
        ),
        customers=CustomersWiring(
            # A member joined: the MEMBER_REGISTERED touchpoint of the funnel.
            member_reactions=(record_member_registered,),
            # After the customers domain moved identities, tags, consents and membership,
            # each domain moves its own rows to the survivor, in this order.
            merge_steps=(
                CouponMergeStep(),
                OrderMergeStep(),
                MetricsMergeStep(),  # after the orders: attributions follow them
                PointsMergeStep(),
                ReferralMergeStep(),
                TouchpointMergeStep(),
            ),
        ),
    )
