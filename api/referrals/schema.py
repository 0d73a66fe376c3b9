"""GraphQL surface of referrals (裂变): campaigns, invites, accepting an invite, the referral
tree and campaign stats. Thin wrappers over the use-case modules.

Who may do what:

* ``referralCampaignCreate``: HQ with referrals:write.
* ``referralCampaigns`` and ``node(ReferralCampaign)``: HQ and members (members invite
  through running campaigns); anyone else is refused (a ``node`` answers null).
* ``referralInviteCreate``, ``referralAccept``: a member for themself (referrals:join).
* ``referralTree``: a member their own tree, their direct invitees only; HQ anyone's; a
  partner or store principal the trees of customers it sees (its recruits), with the
  customers it does not see left out, and everyone below them.
* ``referralCampaignStats``: HQ (referrals:write or analytics:read).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial

import strawberry

from api.coupons import loaders as coupon_loaders
from api.coupons.graphql.types import CouponTemplate, any_scope
from api.customers.graphql.types import Customer
from api.db import utcnow
from api.errors import InputError
from api.graphql.context import Context, Info
from api.graphql.errors import PermissionDenied, UserError
from api.graphql.ids import decode_id_of, encode_id, input_pk
from api.graphql.money import Money
from api.graphql.mutations import UnitOfWork, run_mutation
from api.graphql.parts import SchemaParts
from api.graphql.permissions import requires
from api.graphql.relay import Connection, Node, Rows, connection
from api.referrals import accepting, campaigns, errors, invites, loaders, models, stats, tree

# strawberry.enum registers the GraphQL enum on the Python enum class itself (and returns
# it): fields are annotated with the class, which is a type to mypy too.
ReferralRewardKind = models.RewardKind
strawberry.enum(ReferralRewardKind, name="ReferralRewardKind", description="POINTS or a COUPON.")
ReferralMilestone = models.ReferralMilestone
strawberry.enum(
    ReferralMilestone,
    description="REGISTRATION: the invitee accepted the invite; FIRST_ORDER: the invitee's "
    "first private-domain order completed.",
)
ReferralErrorCode = errors.ReferralErrorCode
strawberry.enum(ReferralErrorCode)

_pk = partial(input_pk, invalid=errors.ReferralErrorCode.INVALID)

_CAMPAIGN_READERS = any_scope("referrals:write", "referrals:join", "analytics:read")
_NOT_YOURS = "Referral campaigns are HQ's programme (members see them to invite)."


async def _customer(info: Info, pk: int | None) -> Customer | None:
    """A customer through the customers domain's node loader: batched, and scoped exactly
    like ``node`` (null when the caller may not see them)."""
    if pk is None:
        return None
    found = await info.context.load_node("Customer", pk)
    return found


async def _campaign(info: Info, pk: int | None) -> ReferralCampaign | None:
    if pk is None:
        return None
    row = await info.context.loader(loaders.campaigns_by_pk).load(pk)
    return ReferralCampaign.from_row(row) if row else None


# --- types ---------------------------------------------------------------------------------


@strawberry.type(description="What a milestone pays the inviter: points or a coupon.")
class ReferralRewardRule:
    kind: ReferralRewardKind
    points: int | None
    template_pk: strawberry.Private[int | None]

    @strawberry.field(description="The coupon granted, for a COUPON reward.")
    async def coupon_template(self, info: Info) -> CouponTemplate | None:
        if self.template_pk is None:
            return None
        row = await info.context.loader(coupon_loaders.templates_by_pk).load(self.template_pk)
        return CouponTemplate.from_row(row) if row else None

    @classmethod
    def of(
        cls, kind: models.RewardKind | None, points: int | None, template_pk: int | None
    ) -> ReferralRewardRule | None:
        return None if kind is None else cls(kind=kind, points=points, template_pk=template_pk)


@strawberry.type(description="A referral campaign (裂变活动): what invites pay, and the limits.")
class ReferralCampaign(Node):
    name: str
    starts_at: datetime
    ends_at: datetime | None = strawberry.field(description="Null: runs until further notice.")
    registration_reward: ReferralRewardRule | None
    first_order_reward: ReferralRewardRule | None
    max_rewarded_per_inviter: int | None = strawberry.field(
        description="An inviter's first N referrals are rewarded; later ones are recorded "
        "with their rewards withheld. Null: no cap."
    )
    max_registrations_per_day: int = strawberry.field(
        description="Registrations per inviter per UTC day; more are refused (DAILY_LIMIT)."
    )
    created_at: datetime
    pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.ReferralCampaign) -> ReferralCampaign:
        return cls(
            id=strawberry.ID(encode_id("ReferralCampaign", row.id)),
            pk=row.id,
            name=row.name,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            registration_reward=ReferralRewardRule.of(
                row.registration_reward, row.registration_points, row.registration_template_id
            ),
            first_order_reward=ReferralRewardRule.of(
                row.first_order_reward, row.first_order_points, row.first_order_template_id
            ),
            max_rewarded_per_inviter=row.max_rewarded_per_inviter,
            max_registrations_per_day=row.max_registrations_per_day,
            created_at=row.created_at,
        )

    @strawberry.field(description="Whether it runs now: invites are made and accepted then.")
    def running(self) -> bool:
        now = utcnow()
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)


async def _load_campaigns(ctx: Context, pks: Sequence[int]) -> list[ReferralCampaign | None]:
    rows = await ctx.loader(loaders.campaigns_by_pk).load_many(pks)
    return [ReferralCampaign.from_row(r) if r else None for r in rows]


@strawberry.type(description="A member's invite in a campaign: the code and the link to share.")
class ReferralInvite:
    code: str
    link: str
    created_at: datetime
    campaign_pk: strawberry.Private[int]

    @strawberry.field
    async def campaign(self, info: Info) -> ReferralCampaign | None:
        return await _campaign(info, self.campaign_pk)


@strawberry.type(description="An accepted invite: who invited whom, in which campaign.")
class Referral:
    code: str
    registered_at: datetime
    first_order_at: datetime | None
    campaign_pk: strawberry.Private[int]
    inviter_pk: strawberry.Private[int]
    invitee_pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.Referral) -> Referral:
        return cls(
            code=row.code,
            registered_at=row.registered_at,
            first_order_at=row.first_order_at,
            campaign_pk=row.campaign_id,
            inviter_pk=row.inviter_id,
            invitee_pk=row.invitee_id,
        )

    @strawberry.field
    async def campaign(self, info: Info) -> ReferralCampaign | None:
        return await _campaign(info, self.campaign_pk)

    @strawberry.field(description="Null unless you may see the customer.")
    async def inviter(self, info: Info) -> Customer | None:
        return await _customer(info, self.inviter_pk)

    @strawberry.field(description="Null unless you may see the customer.")
    async def invitee(self, info: Info) -> Customer | None:
        return await _customer(info, self.invitee_pk)


@strawberry.type(
    description="One invitee in a referral tree. Customers outside your scope (another "
    "partner's) are not in the tree, nor anyone below them."
)
class ReferralTreeNode:
    depth: int = strawberry.field(description="1: invited by the root.")
    parent: int | None = strawberry.field(
        description="Index in `nodes` of the inviter's node; null: invited by the root."
    )
    display_name: str | None = strawberry.field(description="The masked name (王**).")
    registered_at: datetime
    first_order_at: datetime | None
    customer_pk: strawberry.Private[int]
    campaign_pk: strawberry.Private[int]

    @strawberry.field(description="Null when you may not see the customer (a member's invitee).")
    async def customer(self, info: Info) -> Customer | None:
        return await _customer(info, self.customer_pk)

    @strawberry.field
    async def campaign(self, info: Info) -> ReferralCampaign | None:
        return await _campaign(info, self.campaign_pk)


@strawberry.type(description="Who invited whom below a customer, breadth first.")
class ReferralTree:
    depth: int = strawberry.field(description="The levels shown (a member's tree: 1).")
    nodes: list[ReferralTreeNode]
    truncated: bool = strawberry.field(
        description=f"More than {tree.MAX_TREE_NODES} nodes: the deepest are left out."
    )
    root: Customer

    @classmethod
    def of(cls, found: tree.ReferralTree) -> ReferralTree:
        return cls(
            depth=found.depth,
            truncated=found.truncated,
            root=Customer.from_row(found.root),
            nodes=[
                ReferralTreeNode(
                    depth=n.depth,
                    parent=n.parent,
                    display_name=n.masked_name,
                    registered_at=n.registered_at,
                    first_order_at=n.first_order_at,
                    customer_pk=n.customer_id,
                    campaign_pk=n.campaign_id,
                )
                for n in found.nodes
            ],
        )


@strawberry.type
class ReferralWithheldCount:
    reason: str = strawberry.field(
        description="inviter_limit (past the inviter's cap), self_referral (a merge made the "
        "inviter and the invitee one customer), order_refunded (the first order was refunded "
        "in full, cancelled or expired, and its points taken back), or the coupon grant's "
        "refusal (out_of_stock, limit_reached, template_paused, claim_ended ...)."
    )
    count: int


@strawberry.type(description="A campaign's numbers, now.")
class ReferralCampaignStats:
    invites: int = strawberry.field(description="Invite codes members made.")
    registrations: int = strawberry.field(description="Invites accepted.")
    first_orders: int = strawberry.field(
        description="Invitees whose first order completed and still counts (not refunded in "
        "full since)."
    )
    rewards_paid: int
    points_paid: int
    coupons_paid: int
    rewards_withheld: int
    withheld_by_reason: list[ReferralWithheldCount]
    reward_cost: Money = strawberry.field(
        description="Paid rewards: points at their cash value (points ÷ points per yuan), "
        "coupons at their fixed amount off (0 for percent-off and exchange coupons)."
    )

    @classmethod
    def of(cls, numbers: stats.CampaignStats) -> ReferralCampaignStats:
        return cls(
            invites=numbers.invites,
            registrations=numbers.registrations,
            first_orders=numbers.first_orders,
            rewards_paid=numbers.rewards_paid,
            points_paid=numbers.points_paid,
            coupons_paid=numbers.coupons_paid,
            rewards_withheld=numbers.rewards_withheld,
            withheld_by_reason=[
                ReferralWithheldCount(reason=r, count=n)
                for r, n in numbers.withheld_by_reason.items()
            ],
            reward_cost=Money(amount=numbers.reward_cost, currency="CNY"),
        )


# --- queries -------------------------------------------------------------------------------


@strawberry.type
class ReferralQuery:
    @connection(
        Connection[ReferralCampaign],
        description="Referral campaigns, oldest first (reverse: newest first); `running`: "
        "only those running now. HQ and members.",
        permission_classes=[_CAMPAIGN_READERS],
    )
    async def referral_campaigns(
        self, info: Info, running: bool | None = None, reverse: bool = False
    ) -> Rows[ReferralCampaign]:
        ctx = info.context
        if not campaigns.may_see_campaigns(ctx.principal):
            raise PermissionDenied(_NOT_YOURS)
        stmt = campaigns.campaigns_query(ctx.principal, running_at=utcnow() if running else None)
        return Rows(stmt, campaigns.CAMPAIGN_KEYSET, ReferralCampaign.from_row, reverse=reverse)

    @strawberry.field(
        description="Who invited whom below a customer, down to `depth` levels (1-5). A "
        "member asks for their own tree, and sees only whom they invited (depth 1 whatever "
        "is asked); HQ for anyone's; a partner for its recruits' (customers it does not see "
        "are left out, with everyone below them). Null when the customer is not yours.",
        permission_classes=[_CAMPAIGN_READERS],
    )
    async def referral_tree(
        self, info: Info, customer_id: strawberry.ID, depth: int = tree.DEFAULT_TREE_DEPTH
    ) -> ReferralTree | None:
        ctx = info.context
        if not 0 < depth <= tree.MAX_TREE_DEPTH:
            raise InputError(f"`depth` must be between 1 and {tree.MAX_TREE_DEPTH}.")
        customer_pk = decode_id_of(customer_id, "Customer")
        async with ctx.db.read() as session:
            found = await tree.referral_tree(session, ctx.principal, customer_pk, depth)
        return ReferralTree.of(found) if found else None

    @strawberry.field(
        description="A campaign's invites, registrations, first orders and rewards (HQ).",
        permission_classes=[any_scope("referrals:write", "analytics:read")],
    )
    async def referral_campaign_stats(
        self, info: Info, campaign_id: strawberry.ID
    ) -> ReferralCampaignStats | None:
        ctx = info.context
        if not ctx.principal.is_hq:
            raise PermissionDenied("Campaign stats are HQ's.")
        campaign_pk = decode_id_of(campaign_id, "ReferralCampaign")
        async with ctx.db.read() as session:
            numbers = await stats.campaign_stats(session, ctx.principal, campaign_pk)
        return ReferralCampaignStats.of(numbers) if numbers else None


# --- mutations -----------------------------------------------------------------------------


@strawberry.type
class ReferralError(UserError):
    code: ReferralErrorCode


@strawberry.input(description="Exactly one of points or a coupon template.")
class ReferralRewardInput:
    points: int | None = strawberry.field(
        default=None, description="Points credited to the inviter (pending per the policy)."
    )
    coupon_template_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A coupon granted to the inviter: an active template claimable online, "
        "in CNY, with stock, whose claims and validity outlast the campaign's start.",
    )

    def to_service(self, path: str) -> campaigns.RewardDraft:
        template = (
            _pk(self.coupon_template_id, "CouponTemplate", path, "couponTemplateId")
            if self.coupon_template_id is not None
            else None
        )
        return campaigns.RewardDraft(points=self.points, template_id=template)


@strawberry.input
class ReferralCampaignCreateInput:
    name: str
    starts_at: datetime
    ends_at: datetime | None = None
    registration_reward: ReferralRewardInput | None = None
    first_order_reward: ReferralRewardInput | None = None
    max_rewarded_per_inviter: int | None = None
    max_registrations_per_day: int = 20


@strawberry.input
class ReferralInviteCreateInput:
    campaign_id: strawberry.ID


@strawberry.input
class ReferralAcceptInput:
    code: str = strawberry.field(description="The invite code (any case; spaces ignored).")
    device_id: str = strawberry.field(
        description="The app's device identifier: one registration per device per campaign."
    )


@strawberry.type
class ReferralCampaignCreatePayload:
    referral_campaign: ReferralCampaign | None = None
    errors: list[ReferralError] = strawberry.field(default_factory=list)


@strawberry.type
class ReferralInviteCreatePayload:
    invite: ReferralInvite | None = None
    created: bool = strawberry.field(
        default=False, description="false: your code in this campaign, made earlier."
    )
    errors: list[ReferralError] = strawberry.field(default_factory=list)


@strawberry.type
class ReferralAcceptPayload:
    referral: Referral | None = None
    errors: list[ReferralError] = strawberry.field(default_factory=list)


def _secret(ctx: Context) -> bytes:
    """The digest key: from the app's key ring (loaded once at startup); a context outside a
    request (a job) loads the settings' own."""
    request = ctx.request
    keys = request.app.state.keys if request is not None else ctx.settings.key_ring()
    return accepting.referral_secret(keys)


@strawberry.type
class ReferralMutation:
    @strawberry.mutation(
        description="Create a referral campaign (HQ).",
        permission_classes=[requires("referrals:write")],
    )
    async def referral_campaign_create(
        self, info: Info, input: ReferralCampaignCreateInput
    ) -> ReferralCampaignCreatePayload:
        async def change(work: UnitOfWork) -> ReferralCampaignCreatePayload:
            draft = campaigns.CampaignDraft(
                name=input.name,
                starts_at=input.starts_at,
                ends_at=input.ends_at,
                registration_reward=input.registration_reward.to_service("registrationReward")
                if input.registration_reward
                else None,
                first_order_reward=input.first_order_reward.to_service("firstOrderReward")
                if input.first_order_reward
                else None,
                max_rewarded_per_inviter=input.max_rewarded_per_inviter,
                max_registrations_per_day=input.max_registrations_per_day,
            )
            row = await campaigns.create_campaign(work.session, work.principal, draft, now=utcnow())
            work.touched("ReferralCampaign", row.id)
            return ReferralCampaignCreatePayload(referral_campaign=ReferralCampaign.from_row(row))

        return await run_mutation(info, ReferralCampaignCreatePayload, change)

    @strawberry.mutation(
        description="Your invite code and link in a running campaign (a member). Asking again "
        "returns the same code.",
        permission_classes=[requires("referrals:join")],
    )
    async def referral_invite_create(
        self, info: Info, input: ReferralInviteCreateInput
    ) -> ReferralInviteCreatePayload:
        async def change(work: UnitOfWork) -> ReferralInviteCreatePayload:
            campaign_pk = _pk(input.campaign_id, "ReferralCampaign", "campaignId")
            result = await invites.create_invite(
                work.session, work.principal, campaign_pk, now=utcnow()
            )
            invite = ReferralInvite(
                code=result.invite.code,
                link=work.context.settings.referral_link_base + result.invite.code,
                created_at=result.invite.created_at,
                campaign_pk=result.invite.campaign_id,
            )
            return ReferralInviteCreatePayload(invite=invite, created=result.created)

        return await run_mutation(info, ReferralInviteCreatePayload, change)

    @strawberry.mutation(
        description="Accept an invite (a member, for themself): records who invited you and "
        "rewards the inviter. INVALID for control characters in the code or device id. "
        "Refused with UNKNOWN_CODE (also when its campaign is not running), SELF_INVITE, "
        "ALREADY_REFERRED, NOT_NEW (a member since before the campaign or for more than a "
        "day, a private-domain order already, or invited others already), DEVICE_USED, "
        "PHONE_USED or DAILY_LIMIT (the inviter's, per UTC day).",
        permission_classes=[requires("referrals:join")],
    )
    async def referral_accept(
        self, info: Info, input: ReferralAcceptInput
    ) -> ReferralAcceptPayload:
        async def change(work: UnitOfWork) -> ReferralAcceptPayload:
            row = await accepting.accept(
                work.session,
                work.principal,
                input.code,
                input.device_id,
                secret=_secret(work.context),
                settings=work.context.settings,
                now=utcnow(),
            )
            return ReferralAcceptPayload(referral=Referral.from_row(row))

        return await run_mutation(info, ReferralAcceptPayload, change)


__all__ = ["ReferralCampaign", "ReferralMutation", "ReferralQuery"]


schema_parts = SchemaParts(
    query=ReferralQuery,
    mutation=ReferralMutation,
    types=[ReferralCampaign],
    nodes={"ReferralCampaign": _load_campaigns},
)
