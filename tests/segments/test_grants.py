"""Grant jobs: coupons or points to a segment's consenting members, in the background, once.

The people are conftest.py's. Those who consent to marketing messages: ann, bob, dan (cat
refused, fay was never asked). The jobs run here through ``run_grant_job`` itself (the
function the background task and the CLI run), so nothing waits on a clock.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select, update

from api.app import create_app
from api.auth.principal import Principal, Role
from api.auth.scopes import ROLE_SCOPES
from api.cache import InProcessCache
from api.coupons import claims as coupon_claims
from api.coupons import templates as coupon_templates
from api.coupons.models import Coupon, CouponChannel, CouponOrigin, CouponTemplate, TemplateStatus
from api.customers.merge import merge_customers
from api.customers.models import ConsentPurpose, Customer, CustomerConsent, CustomerStatus
from api.db import Database
from api.errors import DomainError
from api.graphql.ids import encode_id
from api.loyalty.models import PointsAccount, PointsEntry
from api.segments import jobs, service
from api.segments.models import GrantAction, JobStatus, SegmentGrantJob, SegmentGrantMember
from api.settings import Settings
from tests.conftest import GraphQLClient
from tests.loyalty.test_merge_retries import wait_until_waiting
from tests.orders.conftest import HQ, coupon_draft
from tests.segments.conftest import NOW, People
from tests.wiring import CUSTOMERS, POINTS_POLICY

POINTS = service.GrantRequest(
    segment_id=0, campaign_key="spring", action=GrantAction.POINTS, reason="Spring", points=100
)


def partner_client(partner_id: int, *scopes: str) -> Principal:
    """A partner's integration with the scopes given."""
    return Principal(
        f"client:{partner_id}", Role.INTEGRATION, partner_id=partner_id, scopes=frozenset(scopes)
    )


async def segment(db: Database, query: str, principal: Principal = HQ) -> int:
    async with db.transaction() as session:
        saved = await service.create_segment(
            session, principal, name="s", query=query, description=None, now=NOW
        )
    return saved.id


async def start(
    db: Database, request: service.GrantRequest, principal: Principal = HQ
) -> tuple[SegmentGrantJob, bool]:
    async with db.transaction() as session:
        return await service.start_grant(session, principal, request, now=NOW)


async def outcomes(db: Database, people: People, job_id: int) -> dict[str, str | None]:
    async with db.read() as session:
        rows = await session.execute(
            select(SegmentGrantMember.customer_id, SegmentGrantMember.outcome).where(
                SegmentGrantMember.job_id == job_id
            )
        )
        by_id = {v: k for k, v in people.ids.items()}
        return {by_id[customer]: outcome for customer, outcome in rows}


def progress(job: SegmentGrantJob) -> tuple[Any, ...]:
    return (job.status, job.total, job.processed, job.granted, job.skipped)


async def balances(db: Database, people: People) -> dict[str, int]:
    async with db.read() as session:
        rows = await session.execute(select(PointsAccount.customer_id, PointsAccount.balance))
        by_id = {v: k for k, v in people.ids.items()}
        return {by_id[customer]: balance for customer, balance in rows}


async def grants_per_person(db: Database, people: People) -> dict[str, int]:
    async with db.read() as session:
        rows = await session.execute(
            select(PointsEntry.customer_id, func.count())
            .where(PointsEntry.source_type == jobs.SOURCE_TYPE)
            .group_by(PointsEntry.customer_id)
        )
        by_id = {v: k for k, v in people.ids.items()}
        return {by_id[customer]: count for customer, count in rows}


# --- points --------------------------------------------------------------------------------


async def test_points_reach_each_consenting_member_once(db: Database, people: People) -> None:
    request = replace(POINTS, segment_id=await segment(db, "member = true"))
    job, created = await start(db, request)
    assert created
    assert progress(job) == (JobStatus.PENDING, 3, 0, 0, 0)

    done = await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, now=NOW)
    assert progress(done) == (JobStatus.COMPLETED, 3, 3, 3, 0)
    assert done.started_at is not None and done.finished_at is not None
    assert await outcomes(db, people, job.id) == {
        "ann": "granted",
        "bob": "granted",
        "dan": "granted",
    }
    # fay is a member without consent, cat neither: nothing for them.
    assert await balances(db, people) == {"ann": 1300, "bob": 100, "dan": 150, "fay": 10}

    # Running a completed job again changes nothing.
    again = await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, now=NOW)
    assert progress(again) == (JobStatus.COMPLETED, 3, 3, 3, 0)
    assert await grants_per_person(db, people) == {"ann": 1, "bob": 1, "dan": 1}


async def test_a_job_that_fails_midway_resumes_without_granting_twice(
    db: Database, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, _ = await start(db, replace(POINTS, segment_id=await segment(db, "member = true")))
    real_earn = jobs.loyalty_earning.earn

    async def earn_failing_for_bob(session: Any, customer_id: int, *args: Any, **kw: Any) -> Any:
        if customer_id == people.ids["bob"]:
            raise RuntimeError("ledger unavailable")
        return await real_earn(session, customer_id, *args, **kw)

    monkeypatch.setattr(jobs.loyalty_earning, "earn", earn_failing_for_bob)
    with pytest.raises(RuntimeError):
        await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, batch_size=1, now=NOW)
    async with db.read() as session:
        failed = await session.get(SegmentGrantJob, job.id)
    assert failed is not None
    # ann's batch committed; bob's rolled back whole.
    assert progress(failed) == (JobStatus.FAILED, 3, 1, 1, 0)
    assert failed.error == "ledger unavailable"

    monkeypatch.setattr(jobs.loyalty_earning, "earn", real_earn)
    resumed = await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, batch_size=1, now=NOW)
    assert progress(resumed) == (JobStatus.COMPLETED, 3, 3, 3, 0)
    assert resumed.error is None
    assert await grants_per_person(db, people) == {"ann": 1, "bob": 1, "dan": 1}

    # Even with its record of who is done lost, a rerun grants nobody a second time.
    async with db.transaction() as session:
        await session.execute(
            update(SegmentGrantMember)
            .where(SegmentGrantMember.job_id == job.id)
            .values(done=False, outcome=None)
        )
        await session.execute(
            update(SegmentGrantJob)
            .where(SegmentGrantJob.id == job.id)
            .values(status=JobStatus.RUNNING)
        )
    await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, now=NOW)
    assert set((await outcomes(db, people, job.id)).values()) == {"skipped:already_granted"}
    assert await grants_per_person(db, people) == {"ann": 1, "bob": 1, "dan": 1}
    assert await balances(db, people) == {"ann": 1300, "bob": 100, "dan": 150, "fay": 10}


async def test_a_person_merged_between_batches_is_paid_once(db: Database, people: People) -> None:
    """ann is granted in the first batch, then merged into dan before dan's turn: dan is
    the same person now, and ann's grant (kept under ann's id) already paid them."""
    job, _ = await start(db, replace(POINTS, segment_id=await segment(db, "member = true")))
    real_earn = jobs.loyalty_earning.earn

    async def earn_failing_for_bob(session: Any, customer_id: int, *args: Any, **kw: Any) -> Any:
        if customer_id == people.ids["bob"]:
            raise RuntimeError("ledger unavailable")
        return await real_earn(session, customer_id, *args, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobs.loyalty_earning, "earn", earn_failing_for_bob)
        with pytest.raises(RuntimeError):
            await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, batch_size=1, now=NOW)
    assert await outcomes(db, people, job.id) == {"ann": "granted", "bob": None, "dan": None}

    async with db.transaction() as session:
        await merge_customers(
            session, HQ, people.ids["dan"], [people.ids["ann"]], dry_run=False, wiring=CUSTOMERS
        )
    done = await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, batch_size=1, now=NOW)
    assert progress(done) == (JobStatus.COMPLETED, 3, 3, 2, 1)
    assert (await outcomes(db, people, job.id))["dan"] == "skipped:already_granted"
    assert await grants_per_person(db, people) == {"ann": 1, "bob": 1}


async def test_two_runners_on_one_job_grant_each_member_once(db: Database, people: People) -> None:
    """A resume started while the background task still runs: both work, nobody gets two."""
    job, _ = await start(db, replace(POINTS, segment_id=await segment(db, "member = true")))
    await asyncio.gather(
        jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, batch_size=1, now=NOW),
        jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, batch_size=1, now=NOW),
    )
    async with db.read() as session:
        done = await session.get(SegmentGrantJob, job.id)
    assert done is not None and progress(done) == (JobStatus.COMPLETED, 3, 3, 3, 0)
    assert await grants_per_person(db, people) == {"ann": 1, "bob": 1, "dan": 1}
    assert await balances(db, people) == {"ann": 1300, "bob": 100, "dan": 150, "fay": 10}


async def test_consent_withdrawn_after_the_start_is_respected(db: Database, people: People) -> None:
    job, _ = await start(db, replace(POINTS, segment_id=await segment(db, "member = true")))
    async with db.transaction() as session:
        await session.execute(
            update(CustomerConsent)
            .where(
                CustomerConsent.customer_id == people.ids["dan"],
                CustomerConsent.purpose == ConsentPurpose.MARKETING_MESSAGES,
            )
            .values(granted=False)
        )
    done = await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, now=NOW)
    assert progress(done) == (JobStatus.COMPLETED, 3, 3, 2, 1)
    assert (await outcomes(db, people, job.id))["dan"] == "skipped:no_consent"
    assert (await balances(db, people))["dan"] == 50


async def test_a_member_merged_after_the_start_is_granted_once_as_the_survivor(
    db: Database, people: People
) -> None:
    job, _ = await start(db, replace(POINTS, segment_id=await segment(db, "member = true")))
    async with db.transaction() as session:
        await session.execute(
            update(Customer)
            .where(Customer.id == people.ids["dan"])
            .values(status=CustomerStatus.MERGED, merged_into_id=people.ids["ann"])
        )
    done = await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, now=NOW)
    assert progress(done) == (JobStatus.COMPLETED, 3, 3, 2, 1)
    assert await outcomes(db, people, job.id) == {
        "ann": "granted",
        "bob": "granted",
        "dan": "skipped:already_granted",  # dan is ann now
    }
    assert await grants_per_person(db, people) == {"ann": 1, "bob": 1}


async def test_a_partners_grant_reaches_only_its_recruits(db: Database, people: People) -> None:
    client = partner_client(
        people.partner_a, "segments:write", "points:write", "analytics:read", "customers:read"
    )
    owned = await segment(db, "member = true", client)
    job, _ = await start(db, replace(POINTS, segment_id=owned), client)
    # ann and dan: A's recruits who consent (fay has not; bob is B's).
    assert job.total == 2
    await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, now=NOW)
    assert set(await outcomes(db, people, job.id)) == {"ann", "dan"}


# --- coupons -------------------------------------------------------------------------------


async def _template(db: Database, **overrides: Any) -> int:
    async with db.transaction() as session:
        template = await coupon_templates.create_template(
            session, HQ, coupon_draft(**overrides), now=NOW
        )
    return template.id


async def test_coupons_skip_a_person_over_the_limit_and_stop_at_the_stock(
    db: Database, people: People
) -> None:
    template = await _template(db, total_stock=2, per_person_limit=1)
    async with db.transaction() as session:  # bob already holds one: 1 of 2 issued
        await coupon_claims.claim(
            session, HQ, template, people.ids["bob"], channel=CouponChannel.ONLINE, now=NOW,
            origin=CouponOrigin.GRANT,
        )  # fmt: skip
    request = service.GrantRequest(
        segment_id=await segment(db, "member = true"),
        campaign_key="coupon-week",
        action=GrantAction.COUPON,
        reason="Coupon week",
        template_id=template,
    )
    job, _ = await start(db, request)
    done = await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, now=NOW)
    assert progress(done) == (JobStatus.COMPLETED, 3, 3, 1, 2)
    assert await outcomes(db, people, job.id) == {
        "ann": "granted",
        "bob": "skipped:limit_reached",
        "dan": "skipped:out_of_stock",
    }
    async with db.read() as session:
        held = await session.execute(
            select(Coupon.customer_id, func.count())
            .where(Coupon.template_id == template)
            .group_by(Coupon.customer_id)
        )
        issued = await session.scalar(
            select(CouponTemplate.issued).where(CouponTemplate.id == template)
        )
    assert dict(held.all()) == {people.ids["ann"]: 1, people.ids["bob"]: 1}
    assert issued == 2


async def test_a_paused_template_fails_the_job_until_it_runs_again(
    db: Database, people: People
) -> None:
    template = await _template(db)
    request = service.GrantRequest(
        segment_id=await segment(db, "member = true"),
        campaign_key="k",
        action=GrantAction.COUPON,
        reason="r",
        template_id=template,
    )
    job, _ = await start(db, request)
    paused = update(CouponTemplate).where(CouponTemplate.id == template)
    async with db.transaction() as session:
        await session.execute(paused.values(status=TemplateStatus.PAUSED))
    with pytest.raises(DomainError, match="This coupon is paused"):
        await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, now=NOW)
    async with db.read() as session:
        failed = await session.get(SegmentGrantJob, job.id)
    assert failed is not None
    assert (progress(failed), failed.error) == (
        (JobStatus.FAILED, 3, 0, 0, 0),
        "This coupon is paused.",
    )
    async with db.transaction() as session:
        await session.execute(paused.values(status=TemplateStatus.ACTIVE))
    done = await jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, now=NOW)
    assert progress(done) == (JobStatus.COMPLETED, 3, 3, 3, 0)


# --- starting: idempotency and validation --------------------------------------------------


async def test_one_job_per_segment_and_campaign_key(db: Database, people: People) -> None:
    request = replace(POINTS, segment_id=await segment(db, "member = true"))
    first, created = await start(db, request)
    retry, created_again = await start(db, replace(request, reason="  Spring "))
    assert (created, created_again, retry.id) == (True, False, first.id)
    with pytest.raises(DomainError) as caught:
        await start(db, replace(request, points=200))
    problem = caught.value.problems[0]
    assert (problem.code, problem.field) == (
        service.SegmentErrorCode.IDEMPOTENCY_KEY_REUSED,
        ("campaignKey",),
    )
    other, created = await start(db, replace(request, campaign_key="summer"))
    assert created and other.id != first.id
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(SegmentGrantJob)) == 2


async def delete(db: Database, segment_id: int) -> int:
    async with db.transaction() as session:
        return await service.delete_segment(session, HQ, segment_id)


async def test_a_segment_with_grants_is_kept_as_their_record(db: Database, people: People) -> None:
    saved = await segment(db, "member = true")
    await start(db, replace(POINTS, segment_id=saved))
    with pytest.raises(DomainError) as caught:
        await delete(db, saved)
    assert caught.value.problems[0].code is service.SegmentErrorCode.IN_USE


async def test_a_delete_racing_a_grant_start_waits_and_is_refused(
    db: Database, people: People
) -> None:
    """The delete arrives while the start's transaction is open: it waits, then sees the
    job (IN_USE), not a foreign-key error."""
    saved = await segment(db, "member = true")
    async with db.transaction() as session:
        await service.start_grant(session, HQ, replace(POINTS, segment_id=saved), now=NOW)
        deleting = asyncio.create_task(delete(db, saved))
        await wait_until_waiting(db, 1)
    with pytest.raises(DomainError) as caught:
        await deleting
    assert caught.value.problems[0].code is service.SegmentErrorCode.IN_USE


async def test_a_grant_start_racing_a_delete_waits_and_finds_no_segment(
    db: Database, people: People
) -> None:
    saved = await segment(db, "member = true")
    async with db.transaction() as session:
        await service.delete_segment(session, HQ, saved)
        starting = asyncio.create_task(start(db, replace(POINTS, segment_id=saved)))
        await wait_until_waiting(db, 1)
    with pytest.raises(DomainError) as caught:
        await starting
    assert caught.value.problems[0].code is service.SegmentErrorCode.NOT_FOUND
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(SegmentGrantJob)) == 0


async def test_a_grant_is_checked_before_it_starts(db: Database, people: People) -> None:
    request = replace(POINTS, segment_id=await segment(db, "member = true"))
    mistakes: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
        ({"points": 0}, [("points", "invalid")]),
        ({"points": 1_000_001}, [("points", "invalid")]),
        (
            {"campaign_key": " ", "reason": ""},
            [("campaignKey", "required"), ("reason", "required")],
        ),
        ({"template_id": 1}, [("couponTemplateId", "invalid")]),
        ({"action": GrantAction.COUPON, "points": None}, [("couponTemplateId", "required")]),
        (
            {"action": GrantAction.COUPON, "points": None, "template_id": 999},
            [("couponTemplateId", "not_found")],
        ),
        ({"segment_id": 999}, [("segmentId", "not_found")]),
    ]
    found = []
    for change, _ in mistakes:
        with pytest.raises(DomainError) as caught:
            await start(db, replace(request, **change))
        found.append([(p.field[0], p.code.value) for p in caught.value.problems])
    assert found == [errors for _, errors in mistakes]
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(SegmentGrantJob)) == 0


async def test_an_offline_only_coupon_cannot_be_granted(db: Database, people: People) -> None:
    template = await _template(db, claim_channel=CouponChannel.OFFLINE)
    request = service.GrantRequest(
        segment_id=await segment(db, "member = true"),
        campaign_key="k",
        action=GrantAction.COUPON,
        reason="r",
        template_id=template,
    )
    with pytest.raises(DomainError, match="issued online"):
        await start(db, request)


async def test_a_grant_needs_the_scope_of_what_it_grants(db: Database, people: People) -> None:
    client = partner_client(people.partner_a, "segments:write", "analytics:read")
    owned = await segment(db, "member = true", client)
    with pytest.raises(DomainError, match="segments:write and points:write"):
        await start(db, replace(POINTS, segment_id=owned), client)
    # Another partner's segment is not found, whatever the scopes.
    other = partner_client(people.partner_b, "segments:write", "points:write", "analytics:read")
    with pytest.raises(DomainError, match="No such segment"):
        await start(db, replace(POINTS, segment_id=owned), other)


# --- over the API, in the background -------------------------------------------------------

GRANT = """
mutation($input: SegmentGrantStartInput!) {
  segmentGrantStart(input: $input) {
    job { id status total } created errors { field code message }
  }
}"""
JOB = """
query($id: ID!) {
  segmentGrantJob(id: $id) {
    status total processed granted skipped error campaignKey action points
    segment { name } couponTemplate { id }
  }
}"""


async def test_start_over_the_api_runs_in_the_background(
    db: Database, people: People, as_principal: Any
) -> None:
    marketer: GraphQLClient = as_principal(Role.MARKETER, subject="user:9")
    saved = await segment(db, "member = true")
    variables = {
        "input": {
            "segmentId": encode_id("Segment", saved),
            "campaignKey": "spring",
            "action": "POINTS",
            "points": 100,
            "reason": "Spring",
        }
    }
    started = (await marketer(GRANT, variables))["segmentGrantStart"]
    assert started["errors"] == [] and started["created"] is True
    await jobs.drain()  # the launched task, awaited: no sleeping
    found = (await marketer(JOB, {"id": started["job"]["id"]}))["segmentGrantJob"]
    assert found == {
        "status": "COMPLETED",
        "total": 3,
        "processed": 3,
        "granted": 3,
        "skipped": 0,
        "error": None,
        "campaignKey": "spring",
        "action": "POINTS",
        "points": 100,
        "segment": {"name": "s"},
        "couponTemplate": None,
    }
    retried = (await marketer(GRANT, variables))["segmentGrantStart"]
    assert (retried["created"], retried["job"]["id"]) == (False, started["job"]["id"])
    await jobs.drain()
    assert await grants_per_person(db, people) == {"ann": 1, "bob": 1, "dan": 1}

    reused = (await marketer(GRANT, {"input": {**variables["input"], "points": 5}}))[
        "segmentGrantStart"
    ]
    assert reused["job"] is None
    assert [(e["field"], e["code"]) for e in reused["errors"]] == [
        (["input", "campaignKey"], "IDEMPOTENCY_KEY_REUSED")
    ]

    # A partner sees neither HQ's segment nor its job; without points:write it may not grant.
    admin = as_principal(Role.PARTNER_ADMIN, partner_id=people.partner_a)
    assert (await admin(JOB, {"id": started["job"]["id"]}))["segmentGrantJob"] is None
    body = await admin.raw(GRANT, variables)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "points:write" in body["errors"][0]["message"]


async def test_a_background_failure_is_recorded_on_the_job(
    db: Database, people: People, as_principal: Any
) -> None:
    template = await _template(db)
    hq: GraphQLClient = as_principal(Role.HQ_ADMIN, scopes=set(ROLE_SCOPES[Role.HQ_ADMIN]))
    saved = await segment(db, "member = true")
    async with db.transaction() as session:
        await session.execute(
            update(CouponTemplate)
            .where(CouponTemplate.id == template)
            .values(status=TemplateStatus.PAUSED)
        )
    variables = {
        "input": {
            "segmentId": encode_id("Segment", saved),
            "campaignKey": "k",
            "action": "COUPON",
            "couponTemplateId": encode_id("CouponTemplate", template),
            "reason": "r",
        }
    }
    started = (await hq(GRANT, variables))["segmentGrantStart"]
    await jobs.drain()
    found = (await hq(JOB, {"id": started["job"]["id"]}))["segmentGrantJob"]
    assert (found["status"], found["error"], found["processed"]) == (
        "FAILED",
        "This coupon is paused.",
        0,
    )
    assert found["couponTemplate"] == {"id": encode_id("CouponTemplate", template)}


# --- interrupted: a shutdown, a crash ------------------------------------------------------


async def job_row(db: Database, job_id: int) -> SegmentGrantJob:
    async with db.read() as session:
        found = await session.get(SegmentGrantJob, job_id)
    assert found is not None
    return found


def earn_stuck_at(monkeypatch: pytest.MonkeyPatch, customer_id: int) -> asyncio.Event:
    """Granting ``customer_id`` hangs (until cancelled); the event is set when it starts."""
    reached = asyncio.Event()
    real_earn = jobs.loyalty_earning.earn

    async def earn(session: Any, person: int, *args: Any, **kw: Any) -> Any:
        if person == customer_id:
            reached.set()
            await asyncio.Event().wait()
        return await real_earn(session, person, *args, **kw)

    monkeypatch.setattr(jobs.loyalty_earning, "earn", earn)
    return reached


async def test_a_cancelled_job_goes_back_to_pending_and_resumes_without_granting_twice(
    db: Database, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, _ = await start(db, replace(POINTS, segment_id=await segment(db, "member = true")))
    reached = earn_stuck_at(monkeypatch, people.ids["bob"])
    running = asyncio.create_task(
        jobs.run_grant_job(db, job.id, policy=POINTS_POLICY, batch_size=1, now=NOW)
    )
    await asyncio.wait_for(reached.wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running  # the cancellation goes on: only the job's state was written
    interrupted = await job_row(db, job.id)
    assert progress(interrupted) == (JobStatus.PENDING, 3, 1, 1, 0)  # bob's batch rolled back
    assert interrupted.error == (
        f"Interrupted (the process stopped); it resumes when the API starts again, or with "
        f"`qudao segments run-grant {job.id}`."
    )

    monkeypatch.undo()
    assert await jobs.resume(db, policy=POINTS_POLICY, now=NOW) == [job.id]
    await jobs.drain()
    resumed = await job_row(db, job.id)
    assert (progress(resumed), resumed.error) == ((JobStatus.COMPLETED, 3, 3, 3, 0), None)
    assert await grants_per_person(db, people) == {"ann": 1, "bob": 1, "dan": 1}


async def test_resume_takes_pending_and_abandoned_jobs_not_live_or_finished_ones(
    db: Database, people: People
) -> None:
    saved = await segment(db, "member = true")
    ids = {}
    for key in ("pending", "alive", "abandoned", "done", "failed"):
        job, _ = await start(db, replace(POINTS, segment_id=saved, campaign_key=key))
        ids[key] = job.id
    for key, status, idle in (
        ("alive", JobStatus.RUNNING, jobs.STALE / 2),  # its runner advanced it lately
        ("abandoned", JobStatus.RUNNING, jobs.STALE * 2),  # its process died
        ("done", JobStatus.COMPLETED, jobs.STALE * 2),
        ("failed", JobStatus.FAILED, jobs.STALE * 2),  # waits for a person to fix the cause
    ):
        async with db.transaction() as session:
            await session.execute(
                update(SegmentGrantJob)
                .where(SegmentGrantJob.id == ids[key])
                .values(status=status, updated_at=NOW - idle)
            )
    assert await jobs.resume(db, policy=POINTS_POLICY, now=NOW) == [
        ids["pending"],
        ids["abandoned"],
    ]
    await jobs.drain()
    assert [(await job_row(db, ids[k])).status for k in ids] == [
        JobStatus.COMPLETED,
        JobStatus.RUNNING,
        JobStatus.COMPLETED,
        JobStatus.COMPLETED,
        JobStatus.FAILED,
    ]


async def test_the_api_resumes_jobs_when_it_starts_and_interrupts_them_when_it_stops(
    db: Database, people: People, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job committed but never launched (the process died in between) runs at the next
    start; a shutdown waits a moment, then interrupts it before the database closes."""
    job, _ = await start(db, replace(POINTS, segment_id=await segment(db, "member = true")))
    reached = earn_stuck_at(monkeypatch, people.ids["ann"])
    monkeypatch.setattr(jobs, "SHUTDOWN_GRACE_SECONDS", 0.01)
    app = create_app(settings, db=db, cache=InProcessCache())
    try:
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(reached.wait(), 10)  # started by the startup
        interrupted = await job_row(db, job.id)
        assert (interrupted.status, interrupted.error) == (
            JobStatus.PENDING,
            jobs.interrupted_message(job.id),
        )

        monkeypatch.undo()
        async with app.router.lifespan_context(app):
            await jobs.drain()
    finally:
        gc.unfreeze()  # the lifespan froze the collector for the process; not for the tests
    assert progress(await job_row(db, job.id)) == (JobStatus.COMPLETED, 3, 3, 3, 0)
    assert await grants_per_person(db, people) == {"ann": 1, "bob": 1, "dan": 1}
