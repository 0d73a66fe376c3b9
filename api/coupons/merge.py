"""What a customer merge does to coupons (a step of ``Wiring.customers.merge_steps``)."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update

from api.coupons.claims import dialect_insert
from api.coupons.models import Coupon, CouponClaimCount, CouponTemplate
from api.customers.merge_steps import MergeConflict, MergeMove, MergePlan


class CouponMergeStep:
    """Moves the sources' coupons to the target and adds their per-template claim counts to
    the target's, so the per-person limit keeps counting the person after a merge."""

    name = "coupons"

    async def preview(self, plan: MergePlan) -> tuple[list[MergeMove], list[MergeConflict]]:
        session = plan.session
        person = [plan.target_id, *plan.source_ids]
        rows = (
            await session.execute(
                select(Coupon.template_id, func.count())
                .where(Coupon.customer_id.in_(plan.source_ids))
                .group_by(Coupon.template_id)
            )
        ).all()
        moves: list[MergeMove] = []
        moving = sum(n for _, n in rows)
        if moving:
            moves.append(
                MergeMove(
                    "coupons",
                    moving,
                    f"{moving} coupon{'s' if moving != 1 else ''} of {len(rows)} "
                    f"template{'s' if len(rows) != 1 else ''}",
                )
            )
        conflicts: list[MergeConflict] = []
        over = await session.execute(
            select(
                CouponTemplate.name,
                CouponTemplate.per_person_limit,
                func.sum(CouponClaimCount.claimed),
            )
            .join(CouponTemplate, CouponTemplate.id == CouponClaimCount.template_id)
            .where(CouponClaimCount.customer_id.in_(person))
            .group_by(CouponTemplate.id, CouponTemplate.name, CouponTemplate.per_person_limit)
            .having(func.sum(CouponClaimCount.claimed) > CouponTemplate.per_person_limit)
            .order_by(CouponTemplate.id)
        )
        for name, limit, held in over:
            conflicts.append(
                MergeConflict(
                    "coupons",
                    f"Together they claimed {held} of {name!r} (limit {limit}): they keep "
                    "them all but cannot claim more.",
                )
            )
        return moves, conflicts

    async def apply(self, plan: MergePlan) -> None:
        session = plan.session
        sources = plan.source_ids
        await session.execute(
            update(Coupon)
            .where(Coupon.customer_id.in_(sources))
            .values(customer_id=plan.target_id),
            execution_options={"synchronize_session": False},
        )
        totals = (
            await session.execute(
                select(CouponClaimCount.template_id, func.sum(CouponClaimCount.claimed))
                .where(CouponClaimCount.customer_id.in_(sources))
                .group_by(CouponClaimCount.template_id)
                .order_by(CouponClaimCount.template_id)
            )
        ).all()
        insert = dialect_insert(session)
        for template_id, claimed in totals:
            stmt = insert(CouponClaimCount).values(
                customer_id=plan.target_id, template_id=template_id, claimed=claimed
            )
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["customer_id", "template_id"],
                    set_={"claimed": CouponClaimCount.claimed + stmt.excluded.claimed},
                )
            )
        await session.execute(
            delete(CouponClaimCount).where(CouponClaimCount.customer_id.in_(sources))
        )
