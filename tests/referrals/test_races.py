"""Concurrent accepts, each in its own transaction, on both engines: one invitee with twenty
codes at once (over HTTP) gets one referral and pays one reward; one device registers once;
an inviter's daily limit is never exceeded; two friends accepting each other's invites make
no cycle."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from api.db import Database
from api.errors import DomainError
from tests.orders.conftest import caller, member, token_of
from tests.referrals.conftest import accept, invite, make_campaign, newcomer, referrals, rewards

ACCEPT = """mutation($input: ReferralAcceptInput!) { referralAccept(input: $input) {
  referral { code } errors { code } } }"""


async def outcomes(calls: list[Any]) -> Counter[str]:
    """How many calls succeeded ("ok") and how many were refused with each code."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    tally: Counter[str] = Counter()
    for result in results:
        if isinstance(result, DomainError):
            tally.update(p.code.name for p in result.problems)
        elif isinstance(result, BaseException):
            raise result
        else:
            tally["ok"] += 1
    return tally


async def test_twenty_codes_at_once_for_one_invitee_make_one_referral(
    db: Database, shop: Any, app: Any, issue_token: Any
):
    campaign_id = await make_campaign(db)
    inviters = [await newcomer(db) for _ in range(20)]
    codes = [await invite(db, inviter, campaign_id) for inviter in inviters]
    dan = await newcomer(db)
    call = caller(app, token_of(issue_token, member(dan)))
    bodies = await asyncio.gather(
        *(
            call(ACCEPT, {"input": {"code": code, "deviceId": f"try-{n}"}})
            for n, code in enumerate(codes)
        )
    )
    answers = Counter(
        tuple(e["code"] for e in body["data"]["referralAccept"]["errors"]) for body in bodies
    )
    assert answers == Counter({(): 1, ("ALREADY_REFERRED",): 19})
    (ref,) = await referrals(db)
    assert ref.invitee_id == dan and ref.inviter_id in inviters
    assert await rewards(db) == [(ref.id, "registration", "points", 200, "2.00", None)]


async def test_one_device_at_once_registers_once(db: Database, shop: Any):
    campaign_id = await make_campaign(db)
    pairs = [(await newcomer(db), await newcomer(db)) for _ in range(8)]
    codes = [await invite(db, inviter, campaign_id) for inviter, _ in pairs]
    tally = await outcomes(
        [
            accept(db, invitee, code, device="one-phone-farm")
            for (_, invitee), code in zip(pairs, codes, strict=True)
        ]
    )
    assert tally == Counter({"ok": 1, "DEVICE_USED": 7})
    assert len(await referrals(db)) == 1
    assert len(await rewards(db)) == 1


async def test_the_daily_limit_holds_under_concurrent_accepts(db: Database, shop: Any):
    campaign_id = await make_campaign(db, max_registrations_per_day=3)
    code = await invite(db, shop.ann, campaign_id)
    friends = [await newcomer(db) for _ in range(10)]
    tally = await outcomes([accept(db, friend, code) for friend in friends])
    assert tally == Counter({"ok": 3, "DAILY_LIMIT": 7})
    assert len(await referrals(db)) == 3
    assert [r[5] for r in await rewards(db)] == [None, None, None]


async def test_two_friends_accepting_each_others_invites_at_once_make_no_cycle(
    db: Database, shop: Any
):
    campaign_id = await make_campaign(db)
    dan, eve = await newcomer(db), await newcomer(db)
    dan_code, eve_code = await invite(db, dan, campaign_id), await invite(db, eve, campaign_id)
    tally = await outcomes([accept(db, eve, dan_code), accept(db, dan, eve_code)])
    assert tally == Counter({"ok": 1, "NOT_NEW": 1})
    (ref,) = await referrals(db)
    assert {ref.inviter_id, ref.invitee_id} == {dan, eve}
