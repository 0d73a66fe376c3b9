"""Running a segment grant job: coupons or points to every snapshotted member, in batches.

``start_grant`` (service.py) wrote the job and its members; ``run_grant_job`` works through
the members not yet done, ``batch_size`` per transaction. Within a batch each member is
granted in a savepoint, so a refused grant (over the person limit, out of stock) undoes
only its own writes and is recorded as skipped with its reason; the members' outcomes and
the job's counters are written in the same transaction as the grants, so they always agree.

Running it again is safe and is how a job resumes (``qudao segments run-grant``): done
members are not looked at, and each grant is idempotent by its source anyway (points: the
loyalty ``earn`` source ("segment_grant", "<job>:<customer>", under any of the person's ids);
coupons: a claim key per job, scoped by the coupons domain to the person). Two runners on
one job do not double-grant: PostgreSQL hands each its own members (SKIP LOCKED); SQLite
runs one writer at a time.

``launch`` runs a job in the background after the mutation commits; tests call
``run_grant_job`` directly (the same function) or ``drain`` the launched ones. A job is
never left RUNNING by this process: at shutdown ``stop`` waits a little, then cancels the
jobs still running, and each puts itself back to PENDING (with the error saying it was
interrupted); at startup ``resume`` relaunches every PENDING job and every RUNNING one
nobody has advanced for ``STALE`` (its process died). Other processes may relaunch the
same jobs: that is two runners, which is safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.principal import Principal, Role
from api.coupons import claims as coupon_claims
from api.coupons.errors import CouponErrorCode
from api.coupons.models import CouponChannel, CouponOrigin
from api.customers.locks import lock_customer
from api.customers.models import ConsentPurpose, Customer, CustomerConsent
from api.db import Database, update_returning, utcnow
from api.errors import DomainError
from api.loyalty import earning as loyalty_earning
from api.loyalty.errors import PointsErrorCode
from api.loyalty.models import EntryKind, PointsEntry
from api.loyalty.rules import PointsPolicy
from api.segments.models import GrantAction, JobStatus, SegmentGrantJob, SegmentGrantMember

log = logging.getLogger("qudao.segments")

BATCH_SIZE = 200
SOURCE_TYPE = "segment_grant"
ACTOR = "system:segments"
ERROR_MAX = 2000
# The job was authorized when it started (segments:write plus coupons:write or points:write,
# over members the starter may see); the runner acts for it with HQ's reach.
_GRANTER = Principal(ACTOR, Role.HQ_ADMIN, scopes=frozenset({"coupons:write", "points:write"}))
# Refusals that concern one member: skipped, with the code as the reason. Any other refusal
# (the template paused, its claims ended) would refuse everyone: the job fails, resumable.
_SKIPPED = frozenset(
    {
        CouponErrorCode.LIMIT_REACHED,
        CouponErrorCode.OUT_OF_STOCK,
        CouponErrorCode.NOT_FOUND,
        PointsErrorCode.NOT_FOUND,
    }
)
GRANTED = "granted"
# A RUNNING job not advanced for this long has lost its runner (a batch takes seconds).
STALE = timedelta(minutes=2)
# How long a shutdown lets running jobs go on before it interrupts them.
SHUTDOWN_GRACE_SECONDS = 5.0


class JobNotFound(LookupError):
    pass


async def _consents(session: AsyncSession, customer_id: int) -> bool:
    granted = await session.scalar(
        select(CustomerConsent.granted).where(
            CustomerConsent.customer_id == customer_id,
            CustomerConsent.purpose == ConsentPurpose.MARKETING_MESSAGES,
        )
    )
    return bool(granted)


async def _grant(
    session: AsyncSession,
    job: SegmentGrantJob,
    customer_id: int,
    now: datetime,
    policy: PointsPolicy,
) -> str:
    """Grant one member (in the caller's savepoint); the outcome to record."""
    # The live person: a member merged since the snapshot is granted as the survivor, once.
    person = await lock_customer(session, customer_id)
    if person is None:
        return "skipped:not_found"
    # Consent is checked again: it may have been withdrawn since the snapshot.
    if not await _consents(session, person.id):
        return "skipped:no_consent"
    source_id = f"{job.id}:{person.id}"
    if job.action is GrantAction.POINTS:
        assert job.points is not None
        # Granted under any id of the person: one merged into it since its grant keeps that
        # earn entry (and source) under the old id. A merge re-points older redirects at
        # the survivor, so one level finds them all (as coupons' claim keys do).
        former = await session.scalars(
            select(Customer.id).where(Customer.merged_into_id == person.id)
        )
        earlier = await session.scalar(
            select(PointsEntry.id)
            .where(
                PointsEntry.source_type == SOURCE_TYPE,
                PointsEntry.source_id.in_([f"{job.id}:{c}" for c in (person.id, *former)]),
                PointsEntry.kind == EntryKind.EARN,
            )
            .limit(1)
        )
        if earlier is not None:
            return "skipped:already_granted"
        await loyalty_earning.earn(
            session,
            person.id,
            job.points,
            source_type=SOURCE_TYPE,
            source_id=source_id,
            reason=job.reason,
            actor=ACTOR,
            now=now,
            pending=False,
            policy=policy,
        )
        return GRANTED
    assert job.template_id is not None
    claimed = await coupon_claims.claim(
        session,
        _GRANTER,
        job.template_id,
        person.id,
        channel=CouponChannel.ONLINE,
        claim_key=f"{SOURCE_TYPE}:{job.id}",
        now=now,
        origin=CouponOrigin.GRANT,
    )
    return GRANTED if claimed.created else "skipped:already_granted"


async def _grant_member(
    session: AsyncSession,
    job: SegmentGrantJob,
    customer_id: int,
    now: datetime,
    policy: PointsPolicy,
) -> str:
    try:
        async with session.begin_nested():
            return await _grant(session, job, customer_id, now, policy)
    except DomainError as error:
        code = error.problems[0].code
        if code in _SKIPPED:
            return f"skipped:{code.value}"
        raise


async def _start(db: Database, job_id: int, now: datetime) -> bool:
    """Mark the job running (again); False when it is already completed."""
    async with db.transaction() as session:
        row = await update_returning(
            session,
            update(SegmentGrantJob)
            .where(SegmentGrantJob.id == job_id, SegmentGrantJob.status != JobStatus.COMPLETED)
            .values(
                status=JobStatus.RUNNING,
                started_at=func.coalesce(SegmentGrantJob.started_at, now),
                error=None,
                updated_at=now,
            )
            .returning(SegmentGrantJob.id),
        )
        if row is not None:
            return True
        if await session.get(SegmentGrantJob, job_id) is None:
            raise JobNotFound(f"No segment grant job {job_id}.")
        return False


async def _batch(
    db: Database, job_id: int, batch_size: int, now: datetime | None, policy: PointsPolicy
) -> int:
    """Grant the next batch in one transaction; how many members it took (0: none left)."""
    async with db.transaction() as session:
        job = await session.get(SegmentGrantJob, job_id)
        assert job is not None
        todo = list(
            await session.scalars(
                select(SegmentGrantMember.customer_id)
                .where(SegmentGrantMember.job_id == job_id, SegmentGrantMember.done.is_(False))
                .order_by(SegmentGrantMember.customer_id)
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            )
        )
        if not todo:
            return 0
        at = now or utcnow()
        by_outcome: dict[str, list[int]] = defaultdict(list)
        for customer_id in todo:
            outcome = await _grant_member(session, job, customer_id, at, policy)
            by_outcome[outcome].append(customer_id)
        granted = skipped = 0
        for outcome, ids in by_outcome.items():
            marked = await session.execute(
                update(SegmentGrantMember)
                .where(
                    SegmentGrantMember.job_id == job_id,
                    SegmentGrantMember.customer_id.in_(ids),
                    SegmentGrantMember.done.is_(False),
                )
                .values(done=True, outcome=outcome)
                .returning(SegmentGrantMember.customer_id),
                execution_options={"synchronize_session": False},
            )
            count = len(marked.all())
            if outcome == GRANTED:
                granted += count
            else:
                skipped += count
        await session.execute(
            update(SegmentGrantJob)
            .where(SegmentGrantJob.id == job_id)
            .values(
                processed=SegmentGrantJob.processed + granted + skipped,
                granted=SegmentGrantJob.granted + granted,
                skipped=SegmentGrantJob.skipped + skipped,
                updated_at=at,
            ),
            execution_options={"synchronize_session": False},
        )
        return len(todo)


async def _finish(db: Database, job_id: int, now: datetime) -> None:
    async with db.transaction() as session:
        left = await session.scalar(
            select(func.count()).where(
                SegmentGrantMember.job_id == job_id, SegmentGrantMember.done.is_(False)
            )
        )
        if left:
            return  # another runner holds the rest (PostgreSQL SKIP LOCKED); it finishes
        await session.execute(
            update(SegmentGrantJob)
            .where(SegmentGrantJob.id == job_id)
            .values(status=JobStatus.COMPLETED, finished_at=now, updated_at=now)
        )


async def _fail(db: Database, job_id: int, error: BaseException) -> None:
    message = str(error) or type(error).__name__
    async with db.transaction() as session:
        await session.execute(
            update(SegmentGrantJob)
            .where(
                SegmentGrantJob.id == job_id,
                or_(
                    SegmentGrantJob.status == JobStatus.RUNNING,
                    SegmentGrantJob.status == JobStatus.PENDING,
                ),
            )
            .values(status=JobStatus.FAILED, error=message[:ERROR_MAX], updated_at=utcnow())
        )


def interrupted_message(job_id: int) -> str:
    return (
        f"Interrupted (the process stopped); it resumes when the API starts again, or with "
        f"`qudao segments run-grant {job_id}`."
    )


async def _interrupt(db: Database, job_id: int) -> None:
    """Back to PENDING, saying so: what ``resume`` relaunches. The batch in flight rolled
    back whole, so PENDING is true of everything not yet marked done."""
    async with db.transaction() as session:
        await session.execute(
            update(SegmentGrantJob)
            .where(SegmentGrantJob.id == job_id, SegmentGrantJob.status == JobStatus.RUNNING)
            .values(
                status=JobStatus.PENDING,
                error=interrupted_message(job_id),
                updated_at=utcnow(),
            )
        )


async def run_grant_job(
    db: Database,
    job_id: int,
    *,
    policy: PointsPolicy,
    batch_size: int = BATCH_SIZE,
    now: datetime | None = None,
) -> SegmentGrantJob:
    """Run (or resume) a job to the end and return it. A completed job is left as it is.
    On an error the job is marked FAILED with it, and the error propagates; cancelled (a
    shutdown), it goes back to PENDING and the cancellation propagates. Running the job
    again resumes where it stopped. ``now``: the grants' time (default: the clock);
    ``policy``: how granted points expire (the settings')."""
    if not await _start(db, job_id, now or utcnow()):
        return await _load(db, job_id)
    try:
        while await _batch(db, job_id, batch_size, now, policy):
            pass
        await _finish(db, job_id, now or utcnow())
    except Exception as error:
        await _fail(db, job_id, error)
        raise
    except BaseException:
        # Cancelled (a shutdown): resumable, and the cancellation goes on whatever happens.
        try:
            await _interrupt(db, job_id)
        except Exception:
            log.exception("could not mark segment grant job %s interrupted", job_id)
        raise
    return await _load(db, job_id)


async def _load(db: Database, job_id: int) -> SegmentGrantJob:
    async with db.read() as session:
        job = await session.get(SegmentGrantJob, job_id)
    if job is None:
        raise JobNotFound(f"No segment grant job {job_id}.")
    return job


# --- background ----------------------------------------------------------------------------

# Running tasks, referenced until done: the event loop keeps only weak references to tasks,
# and an unreferenced one may be garbage-collected mid-run.
_TASKS: set[asyncio.Task[None]] = set()


async def _run_logged(db: Database, job_id: int, policy: PointsPolicy) -> None:
    try:
        await run_grant_job(db, job_id, policy=policy)
    except Exception:
        # Already recorded on the job (FAILED, with the error); resumable from the CLI.
        log.exception("segment grant job %s failed", job_id)


def launch(db: Database, job_id: int, policy: PointsPolicy) -> asyncio.Task[None]:
    """Run the job in the background of this process (call after its start committed)."""
    task = asyncio.get_running_loop().create_task(
        _run_logged(db, job_id, policy), name=f"segment-grant-{job_id}"
    )
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


async def drain() -> None:
    """Wait for every launched job (tests)."""
    while _TASKS:
        await asyncio.gather(*list(_TASKS), return_exceptions=True)


async def stop(grace: float | None = None) -> None:
    """A shutdown: let the launched jobs run ``grace`` seconds more (default
    SHUTDOWN_GRACE_SECONDS), then cancel the rest and wait until each has put itself back to
    PENDING (call before closing the db)."""
    if _TASKS:
        await asyncio.wait(list(_TASKS), timeout=SHUTDOWN_GRACE_SECONDS if grace is None else grace)
    while _TASKS:  # a task may launch others (``resume``): those are cancelled too
        running = list(_TASKS)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def resume(db: Database, *, policy: PointsPolicy, now: datetime | None = None) -> list[int]:
    """Launch the jobs nobody runs and return their ids: PENDING ones (interrupted, or
    never launched: a crash between the start's commit and its launch) and RUNNING ones
    not advanced for STALE (their process died)."""
    stale = (now or utcnow()) - STALE
    async with db.read() as session:
        ids = list(
            await session.scalars(
                select(SegmentGrantJob.id)
                .where(
                    or_(
                        SegmentGrantJob.status == JobStatus.PENDING,
                        and_(
                            SegmentGrantJob.status == JobStatus.RUNNING,
                            SegmentGrantJob.updated_at < stale,
                        ),
                    )
                )
                .order_by(SegmentGrantJob.id)
            )
        )
    for job_id in ids:
        launch(db, job_id, policy)
    return ids


async def _resume_logged(db: Database, policy: PointsPolicy) -> None:
    try:
        resumed = await resume(db, policy=policy)
    except Exception:
        # The database may not answer yet; the jobs wait for the next start (or the CLI).
        log.exception("could not look for segment grant jobs to resume")
        return
    if resumed:
        log.info("resumed segment grant jobs %s", resumed)


def resume_in_background(db: Database, policy: PointsPolicy) -> asyncio.Task[None]:
    """``resume`` without holding up the caller (the API's startup), stopped by ``stop``."""
    task = asyncio.get_running_loop().create_task(_resume_logged(db, policy), name="segment-resume")
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


__all__ = [
    "BATCH_SIZE",
    "SOURCE_TYPE",
    "STALE",
    "JobNotFound",
    "drain",
    "interrupted_message",
    "launch",
    "resume",
    "resume_in_background",
    "run_grant_job",
    "stop",
]
