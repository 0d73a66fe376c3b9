"""The customers domain's queries: ``customers``, ``customer``, ``customerDuplicates``,
``memberLevels``."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.customers import customer_filter, duplicates, levels
from api.customers.graphql.types import (
    ConsentPurpose,
    Customer,
    CustomerDuplicate,
    CustomerSortKeys,
    IdentityInput,
    MemberLevel,
    load_customers,
)
from api.errors import DomainError, InputError
from api.graphql.context import Info
from api.graphql.ids import decode_id_of
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Rows, connection


@strawberry.input(description="A time range: from (inclusive) to (exclusive).")
class DateTimeRangeInput:
    start: datetime | None = strawberry.field(default=None, name="from")
    end: datetime | None = strawberry.field(default=None, name="to")

    def to_service(self) -> customer_filter.DateTimeRange:
        return customer_filter.DateTimeRange(self.start, self.end)


@strawberry.input
class ConsentFilterInput:
    purpose: ConsentPurpose
    granted: bool = True


@strawberry.input(
    description=f"Every list takes at most {customer_filter.MAX_FILTER_VALUES} values; more is a "
    "BAD_USER_INPUT error."
)
class CustomerFilter:
    identity: IdentityInput | None = strawberry.field(
        default=None, description="The customer with this identity (the value is normalized)."
    )
    tags: list[str] | None = strawberry.field(default=None, description="Has every one.")
    any_tags: list[str] | None = strawberry.field(default=None, description="Has at least one.")
    level_ids: list[strawberry.ID] | None = None
    level_codes: list[str] | None = None
    recruited_store_ids: list[strawberry.ID] | None = None
    recruited_guide_ids: list[strawberry.ID] | None = None
    recruited_partner_ids: list[strawberry.ID] | None = None
    is_member: bool | None = None
    created_at: DateTimeRangeInput | None = None
    member_since: DateTimeRangeInput | None = None
    search: str | None = strawberry.field(
        default=None,
        description=f"Part of the name (at most {customer_filter.MAX_SEARCH_CHARS} characters).",
    )
    consent: ConsentFilterInput | None = strawberry.field(
        default=None, description="Customers who granted (or did not grant) a purpose."
    )

    def to_service(self) -> customer_filter.CustomerFilter:
        """The service's filter; InputError (a top-level BAD_USER_INPUT) for a list over
        the cap or an over-long search, checked before a single id is decoded."""
        sizes = {
            "tags": self.tags,
            "anyTags": self.any_tags,
            "levelIds": self.level_ids,
            "levelCodes": self.level_codes,
            "recruitedStoreIds": self.recruited_store_ids,
            "recruitedGuideIds": self.recruited_guide_ids,
            "recruitedPartnerIds": self.recruited_partner_ids,
        }
        oversized = customer_filter.filter_size_problems(
            {name: len(values or ()) for name, values in sizes.items()}, self.search
        )
        if oversized:
            raise InputError(" ".join(message for _, message in oversized))
        return customer_filter.CustomerFilter(
            identity=(self.identity.kind, self.identity.value) if self.identity else None,
            tags=self.tags or (),
            any_tags=self.any_tags or (),
            level_ids=[decode_id_of(i, "MemberLevel") for i in self.level_ids or ()],
            level_codes=self.level_codes or (),
            recruited_store_ids=[decode_id_of(i, "Store") for i in self.recruited_store_ids or ()],
            recruited_guide_ids=[
                decode_id_of(i, "StaffUser") for i in self.recruited_guide_ids or ()
            ],
            recruited_partner_ids=[
                decode_id_of(i, "Partner") for i in self.recruited_partner_ids or ()
            ],
            is_member=self.is_member,
            created=self.created_at.to_service() if self.created_at else None,
            member_since=self.member_since.to_service() if self.member_since else None,
            search=self.search,
            consent=(self.consent.purpose, self.consent.granted) if self.consent else None,
        )


@strawberry.type
class CustomerQuery:
    @connection(
        Connection[Customer],
        permission_classes=[requires("customers:read")],
        description="Customers you may see: HQ all; a partner those it recruited; a store its "
        "own; a member themself.",
    )
    async def customers(
        self,
        info: Info,
        filter: CustomerFilter | None = None,
        sort_key: CustomerSortKeys = customer_filter.CustomerSortKey.ID,
        reverse: bool = False,
    ) -> Rows[Customer]:
        ctx = info.context
        try:
            stmt = customer_filter.customers_query(
                ctx.principal, filter.to_service() if filter else None
            )
        except DomainError as error:
            raise InputError(str(error)) from None
        return Rows(
            stmt, customer_filter.CUSTOMER_KEYSETS[sort_key], Customer.from_row, reverse=reverse
        )

    @strawberry.field(
        permission_classes=[requires("customers:read")],
        description="A customer by ID; a merged customer's ID returns the survivor.",
    )
    async def customer(self, info: Info, id: strawberry.ID) -> Customer | None:
        return (await load_customers(info.context, [decode_id_of(id, "Customer")]))[0]

    @strawberry.field(
        permission_classes=[requires("customers:read")],
        description="Customers that are probably the same person as this one, best first "
        "(within what you may see). Merge them with customersMerge.",
    )
    async def customer_duplicates(
        self, info: Info, customer_id: strawberry.ID, first: int = 10
    ) -> list[CustomerDuplicate]:
        ctx = info.context
        pk = decode_id_of(customer_id, "Customer")
        if not 1 <= first <= duplicates.MAX_CANDIDATES:
            raise InputError(f"`first` must be between 1 and {duplicates.MAX_CANDIDATES}.")
        try:
            async with ctx.db.read() as session:
                found = await duplicates.find_duplicates(session, ctx.principal, pk, first)
        except DomainError:
            return []  # not found, or not yours: the same empty answer
        return [
            CustomerDuplicate(
                customer=Customer.from_row(c.customer), reasons=c.reasons, score=c.score
            )
            for c in found
        ]

    @strawberry.field(
        permission_classes=[requires("customers:read")],
        description="The member levels, lowest rank first.",
    )
    async def member_levels(self, info: Info) -> list[MemberLevel]:
        async with info.context.db.read() as session:
            rows = await levels.all_levels(session)
        return [MemberLevel.from_row(r) for r in rows]
