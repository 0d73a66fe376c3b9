"""The customers domain's mutations: ``customerUpsert``, ``customerUpdate``,
``customersMerge``, ``memberJoin`` and the member level ones."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import strawberry
from strawberry import UNSET as GQL_UNSET
from strawberry.scalars import JSON

from api.audit.service import AuditEntry
from api.customers import errors, levels, membership, merge, models, profile, update, upsert
from api.customers.graphql.types import (
    ConsentPurpose,
    Customer,
    CustomerErrorCode,
    Gender,
    IdentityInput,
    LevelMetric,
    MemberLevel,
    MergeConflict,
    MergeMove,
)
from api.errors import DomainError
from api.graphql.context import Info
from api.graphql.errors import UserError
from api.graphql.ids import input_pk
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.permissions import requires


@strawberry.type
class CustomerError(UserError):
    code: CustomerErrorCode


@strawberry.input
class ConsentInput:
    purpose: ConsentPurpose
    granted: bool
    source: str = strawberry.field(description="Where it was given: mini_program, store, ...")
    decided_at: datetime | None = strawberry.field(
        default=None, description="Defaults to now; an older decision never replaces a newer."
    )


@strawberry.input
class CustomerUpsertInput:
    identities: list[IdentityInput] = strawberry.field(
        description="Finds the customer by any of them; the ones not on file are attached."
    )
    name: str | None = None
    gender: Gender | None = None
    birthday: date | None = None
    contact_phone: str | None = None
    contact_email: str | None = None
    first_channel: str | None = strawberry.field(
        default=None, description="Only set on a customer without one (the first contact)."
    )
    consents: list[ConsentInput] = strawberry.field(default_factory=list)
    tags: list[str] = strawberry.field(default_factory=list, description="Tags to add.")
    attributes: JSON | None = strawberry.field(
        default=None, description="Merged shallowly: a given key replaces that key."
    )
    unionid_hint: str | None = strawberry.field(
        default=None, description="The WeChat unionid a given openid was seen with."
    )
    fill_only: bool = strawberry.field(
        default=False, description="Only fill blank profile fields (channel imports)."
    )


@strawberry.type
class CustomerUpsertPayload:
    customer: Customer | None = None
    created: bool = False
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input(description="Only the fields given change; null clears an optional field.")
class CustomerUpdateInput:
    id: strawberry.ID
    name: str | None = GQL_UNSET
    gender: Gender | None = GQL_UNSET
    birthday: date | None = GQL_UNSET
    contact_phone: str | None = GQL_UNSET
    contact_email: str | None = GQL_UNSET
    tags_add: list[str] = strawberry.field(default_factory=list)
    tags_remove: list[str] = strawberry.field(default_factory=list)
    attributes_set: JSON | None = strawberry.field(
        default=None, description="Keys to set (merged shallowly)."
    )
    attributes_unset: list[str] = strawberry.field(default_factory=list)
    consents: list[ConsentInput] = strawberry.field(default_factory=list)
    identities_add: list[IdentityInput] = strawberry.field(default_factory=list)
    identities_remove: list[IdentityInput] = strawberry.field(default_factory=list)


@strawberry.type
class CustomerUpdatePayload:
    customer: Customer | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input
class CustomersMergeInput:
    target_id: strawberry.ID = strawberry.field(description="The customer that survives.")
    source_ids: list[strawberry.ID] = strawberry.field(
        description="Up to 10 customers merged into the target; their ids then redirect."
    )
    dry_run: bool = strawberry.field(
        default=False, description="Only preview: what would move, and the conflicts."
    )


@strawberry.type
class CustomersMergePayload:
    customer: Customer | None = strawberry.field(
        default=None, description="The target (after the merge, unless a dry run)."
    )
    dry_run: bool = False
    moves: list[MergeMove] = strawberry.field(default_factory=list)
    conflicts: list[MergeConflict] = strawberry.field(default_factory=list)
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input(
    description="Enrol a member: an existing customer by customerId, or by identities (a "
    "clerk enrolling a walk-in by phone). Store staff recruit for their store (and as its "
    "guide); HQ and partner callers name the store."
)
class MemberJoinInput:
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="A customer you can see."
    )
    identities: list[IdentityInput] | None = strawberry.field(
        default=None,
        description="HQ: find or create the customer by any of them, attaching the new ones. "
        "Anyone else: exactly one PHONE (WeChat and other identities come from the member's "
        "own login).",
    )
    name: str | None = None
    consents: list[ConsentInput] = strawberry.field(default_factory=list)
    store_id: strawberry.ID | None = None
    guide_id: strawberry.ID | None = strawberry.field(
        default=None, description="A staff user of the store who recruited the member."
    )


@strawberry.type
class MemberJoinPayload:
    customer: Customer | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input
class MemberLevelCreateInput:
    code: str
    name: str
    rank: int = strawberry.field(description="0 is the entry level; higher is better.")
    metric: LevelMetric
    threshold: Decimal
    window_days: int = 365
    grace_days: int = 30


@strawberry.type
class MemberLevelCreatePayload:
    member_level: MemberLevel | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input(description="Only the fields given change.")
class MemberLevelUpdateInput:
    id: strawberry.ID
    name: str | None = None
    threshold: Decimal | None = None
    window_days: int | None = None
    grace_days: int | None = None


@strawberry.type
class MemberLevelUpdatePayload:
    member_level: MemberLevel | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


@strawberry.input
class MemberLevelSetInput:
    customer_id: strawberry.ID
    level_id: strawberry.ID | None = strawberry.field(
        description="A manual level (a floor the member never drops below); null clears it."
    )


@strawberry.type
class MemberLevelSetPayload:
    customer: Customer | None = None
    errors: list[CustomerError] = strawberry.field(default_factory=list)


# An input id's primary key; a malformed id is a payload error on that field.
_pk = partial(input_pk, invalid=errors.CustomerErrorCode.INVALID)


def _identities(given: Sequence[IdentityInput]) -> list[tuple[models.IdentityKind, str]]:
    return [(i.kind, i.value) for i in given]


def _consents(given: Sequence[ConsentInput]) -> list[profile.ConsentDecision]:
    return [profile.ConsentDecision(c.purpose, c.granted, c.source, c.decided_at) for c in given]


def _attributes(value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DomainError.one(
            errors.CustomerErrorCode.INVALID, "Attributes are a JSON object.", path
        )
    return value


def _given(value: Any) -> bool:
    return value is not GQL_UNSET


@strawberry.type
class CustomerMutation:
    @strawberry.mutation(
        permission_classes=[requires("customers:write")],
        description="Find a customer by any identity or create one; attach new identities.",
    )
    async def customer_upsert(
        self, info: Info, input: CustomerUpsertInput
    ) -> CustomerUpsertPayload:
        async def change(work: UnitOfWork) -> CustomerUpsertPayload:
            draft = profile.CustomerDraft(
                identities=_identities(input.identities),
                name=input.name,
                gender=input.gender,
                birthday=input.birthday,
                contact_phone=input.contact_phone,
                contact_email=input.contact_email,
                first_channel=input.first_channel,
                consents=_consents(input.consents),
                tags=input.tags,
                attributes=_attributes(input.attributes, "attributes"),
                unionid_hint=input.unionid_hint,
                fill_only=input.fill_only,
            )
            result = await upsert.upsert_for(work.session, work.principal, draft)
            work.touched("Customer", result.customer.id)
            return CustomerUpsertPayload(
                customer=Customer.from_row(result.customer), created=result.created
            )

        return await run_mutation(info, CustomerUpsertPayload, change)

    @strawberry.mutation(permission_classes=[requires("customers:write")])
    async def customer_update(
        self, info: Info, input: CustomerUpdateInput
    ) -> CustomerUpdatePayload:
        async def change(work: UnitOfWork) -> CustomerUpdatePayload:
            changes = update.CustomerChanges(
                tags_add=input.tags_add,
                tags_remove=input.tags_remove,
                attributes_set=_attributes(input.attributes_set, "attributesSet"),
                attributes_unset=input.attributes_unset,
                consents=_consents(input.consents),
                identities_add=_identities(input.identities_add),
                identities_remove=_identities(input.identities_remove),
            )
            for name in ("name", "gender", "birthday", "contact_phone", "contact_email"):
                value = getattr(input, name)
                if _given(value):
                    setattr(changes, name, value)
            customer_pk = _pk(input.id, "Customer", "id")
            row = await update.update_customer(work.session, work.principal, customer_pk, changes)
            work.touched("Customer", row.id)
            return CustomerUpdatePayload(customer=Customer.from_row(row))

        return await run_mutation(info, CustomerUpdatePayload, change)

    @strawberry.mutation(
        permission_classes=[requires("customers:write")],
        description="Merge duplicates into one customer, in one transaction; dryRun previews.",
    )
    async def customers_merge(
        self, info: Info, input: CustomersMergeInput
    ) -> CustomersMergePayload:
        async def change(work: UnitOfWork) -> CustomersMergePayload:
            if len(input.source_ids) > merge.MAX_SOURCES:
                # Refused before decoding: the list is the caller's, its length is not.
                raise DomainError.one(
                    errors.CustomerErrorCode.MERGE_INVALID,
                    f"At most {merge.MAX_SOURCES} sources per merge.",
                    "sourceIds",
                )
            target = _pk(input.target_id, "Customer", "targetId")
            sources = [
                _pk(s, "Customer", "sourceIds", str(i)) for i, s in enumerate(input.source_ids)
            ]
            outcome = await merge.merge_customers(
                work.session,
                work.principal,
                target,
                sources,
                dry_run=input.dry_run,
                wiring=work.context.wiring.customers,
            )
            if input.dry_run:
                # The preview read a locked, stable picture; roll back and let go.
                work.preview()
            else:
                work.touched("Customer", outcome.target.id)
                work.audit(
                    AuditEntry(
                        "customers.merged",
                        "Customer",
                        str(outcome.target.id),
                        {
                            "sources": outcome.source_ids,
                            "moves": [[m.kind, m.count, m.description] for m in outcome.moves],
                            "conflicts": [[c.field, c.message] for c in outcome.conflicts],
                        },
                    )
                )
            return CustomersMergePayload(
                customer=Customer.from_row(outcome.target),
                dry_run=input.dry_run,
                moves=[
                    MergeMove(kind=m.kind, count=m.count, description=m.description)
                    for m in outcome.moves
                ],
                conflicts=[
                    MergeConflict(field=c.field, message=c.message) for c in outcome.conflicts
                ],
            )

        answer = await run_mutation(info, CustomersMergePayload, change)
        answer.dry_run = input.dry_run  # a refusal says which it refused, too
        return answer

    @strawberry.mutation(
        permission_classes=[requires("members:write")],
        description="Enrol a member, recruited by a store (and guide) for life.\n\n"
        "Partners, stores and partner integrations enrol a walk-in by exactly one phone "
        "number. A new number creates the customer with it. A number on file of a customer "
        "who is not a member yet enrols that customer: they become this store's member, "
        "and the store sees them from then on. No identity is ever added to a customer on "
        "file this way. A number of someone who is a member already answers ALREADY_MEMBER, "
        "with the same message whichever store recruited them: that a phone is a member's "
        "is a fact of the brand, and the one thing a store learns about a phone it enrols. "
        "HQ may enrol by several identities (attaching the new ones).\n\n"
        "Next step (not built yet): a code-verified enrolment, where the member confirms "
        "with a code texted to the phone.",
    )
    async def member_join(self, info: Info, input: MemberJoinInput) -> MemberJoinPayload:
        async def change(work: UnitOfWork) -> MemberJoinPayload:
            draft = None
            if input.identities is not None:
                draft = profile.CustomerDraft(
                    identities=_identities(input.identities),
                    name=input.name,
                    consents=_consents(input.consents),
                    first_channel="store" if work.principal.store_id else None,
                )
            request = membership.JoinRequest(
                customer_id=_pk(input.customer_id, "Customer", "customerId")
                if input.customer_id
                else None,
                draft=draft,
                store_id=_pk(input.store_id, "Store", "storeId") if input.store_id else None,
                guide_id=_pk(input.guide_id, "StaffUser", "guideId") if input.guide_id else None,
            )
            row = await membership.join(
                work.session, work.principal, request, wiring=work.context.wiring.customers
            )
            work.touched("Customer", row.id)
            return MemberJoinPayload(customer=Customer.from_row(row))

        return await run_mutation(info, MemberJoinPayload, change)

    @strawberry.mutation(permission_classes=[requires("loyalty:write")])
    async def member_level_create(
        self, info: Info, input: MemberLevelCreateInput
    ) -> MemberLevelCreatePayload:
        async def change(work: UnitOfWork) -> MemberLevelCreatePayload:
            draft = levels.LevelDraft(
                code=input.code,
                name=input.name,
                rank=input.rank,
                metric=input.metric,
                threshold=input.threshold,
                window_days=input.window_days,
                grace_days=input.grace_days,
            )
            row = await levels.create_level(work.session, work.principal, draft)
            work.touched("MemberLevel", row.id)
            return MemberLevelCreatePayload(member_level=MemberLevel.from_row(row))

        return await run_mutation(info, MemberLevelCreatePayload, change)

    @strawberry.mutation(permission_classes=[requires("loyalty:write")])
    async def member_level_update(
        self, info: Info, input: MemberLevelUpdateInput
    ) -> MemberLevelUpdatePayload:
        async def change(work: UnitOfWork) -> MemberLevelUpdatePayload:
            changes = levels.LevelChanges(
                name=input.name,
                threshold=input.threshold,
                window_days=input.window_days,
                grace_days=input.grace_days,
            )
            level_pk = _pk(input.id, "MemberLevel", "id")
            row = await levels.update_level(work.session, work.principal, level_pk, changes)
            work.touched("MemberLevel", row.id)
            return MemberLevelUpdatePayload(member_level=MemberLevel.from_row(row))

        return await run_mutation(info, MemberLevelUpdatePayload, change)

    @strawberry.mutation(
        permission_classes=[requires("members:write")],
        description="Set a manual level: a floor the member never drops below (null clears).",
    )
    async def member_level_set(
        self, info: Info, input: MemberLevelSetInput
    ) -> MemberLevelSetPayload:
        async def change(work: UnitOfWork) -> MemberLevelSetPayload:
            customer_pk = _pk(input.customer_id, "Customer", "customerId")
            level_pk = _pk(input.level_id, "MemberLevel", "levelId") if input.level_id else None
            row = await membership.set_manual_level(
                work.session, work.principal, customer_pk, level_pk
            )
            work.touched("Customer", row.id)
            return MemberLevelSetPayload(customer=Customer.from_row(row))

        return await run_mutation(info, MemberLevelSetPayload, change)
