"""Which partner (and store, and customer) every partner-scoped table belongs to: one table.

``api/auth/scope.py``'s ``restrict`` reads it on every read of these tables, so no resolver
has to remember a check. It imports models only (never services), so anything may use
``restrict`` without an import circle; the composition root (``api/wiring.py``) names it as
one of the project's tables. A new partner-scoped model gets its line here, or ``restrict``
refuses to read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import InstrumentedAttribute

from api.analytics.models import ChannelSpend
from api.coupons.models import Coupon
from api.customers.models import Customer
from api.growth.models import Touchpoint
from api.inventory.models import StockAlert, StockLevel, StockMovement
from api.loyalty.models import PointsEntry
from api.orders.models import Order
from api.partners.models import Partner, Store
from api.purchasing.models import PartnerCredit, PurchaseOrder
from api.segments.models import Segment, SegmentGrantJob

# A column of the row itself, or a correlated scalar subquery over another table.
Owner = InstrumentedAttribute[Any] | ColumnElement[Any]


@dataclass(frozen=True, slots=True)
class Ownership:
    """Which columns tie a row to a partner, (optionally) to a store, and to a customer.

    A row with a ``customer`` column is visible to that customer's member token; a row
    without one is invisible to every member. Each may be a column or a correlated scalar
    subquery (the table then needs no copy of the owner).
    """

    partner: Owner
    store: Owner | None = None
    customer: Owner | None = None


def _store_partner(store_id: Any) -> ColumnElement[Any]:
    return select(Store.partner_id).where(Store.id == store_id).scalar_subquery()


def _recruiting_partner(customer_id: Any) -> ColumnElement[Any]:
    return select(Customer.recruited_partner_id).where(Customer.id == customer_id).scalar_subquery()


def _recruiting_store(customer_id: Any) -> ColumnElement[Any]:
    return select(Customer.recruited_store_id).where(Customer.id == customer_id).scalar_subquery()


OWNERSHIP: Mapping[type, Ownership] = {
    Partner: Ownership(partner=Partner.id),
    Store: Ownership(partner=Store.partner_id, store=Store.id),
    # A partner sees the customers it recruited, a store principal its store's, a member itself.
    Customer: Ownership(
        partner=Customer.recruited_partner_id,
        store=Customer.recruited_store_id,
        customer=Customer.id,
    ),
    # Points entries and coupons are seen where their customer is: by the recruiting partner
    # (and store), by the member themself, and by HQ.
    PointsEntry: Ownership(
        partner=_recruiting_partner(PointsEntry.customer_id),
        store=_recruiting_store(PointsEntry.customer_id),
        customer=PointsEntry.customer_id,
    ),
    Coupon: Ownership(
        partner=_recruiting_partner(Coupon.customer_id),
        store=_recruiting_store(Coupon.customer_id),
        customer=Coupon.customer_id,
    ),
    # Stock belongs to its location's partner; a location without one (HQ-run) is HQ's
    # alone. Members see none of it.
    StockLevel: Ownership(partner=_store_partner(StockLevel.store_id), store=StockLevel.store_id),
    StockMovement: Ownership(
        partner=_store_partner(StockMovement.store_id), store=StockMovement.store_id
    ),
    StockAlert: Ownership(partner=_store_partner(StockAlert.store_id), store=StockAlert.store_id),
    # The seller sees its orders (a store principal its store's), the customer their own.
    Order: Ownership(partner=Order.partner_id, store=Order.store_id, customer=Order.customer_id),
    Touchpoint: Ownership(partner=Touchpoint.partner_id, store=Touchpoint.store_id),
    ChannelSpend: Ownership(partner=ChannelSpend.partner_id),
    Segment: Ownership(partner=Segment.owner_partner_id),
    # A grant job is seen where its segment is.
    # A partner's purchase orders (a store principal: those delivered to its store) and its
    # credit line. Price lists are HQ's: a partner reads its prices as quotes.
    PurchaseOrder: Ownership(partner=PurchaseOrder.partner_id, store=PurchaseOrder.store_id),
    PartnerCredit: Ownership(partner=PartnerCredit.partner_id),
    SegmentGrantJob: Ownership(
        partner=select(Segment.owner_partner_id)
        .where(Segment.id == SegmentGrantJob.segment_id)
        .scalar_subquery()
    ),
}
