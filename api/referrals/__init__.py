"""Referral / fission (裂变): members invite others; the invitee's registration and first order
reward the inviter, within limits that stop abuse.

Plain async functions over a session, one module per use case: ``campaigns``, ``invites``,
``accepting``, ``rewards``, ``first_orders`` (the reaction to orders), ``tree``, ``stats``,
``merge_step``; GraphQL in ``schema.py``.

The story: HQ creates a campaign (what a registration and a first order pay the inviter, and
the limits). A member asks for their invite code in it (one per member and campaign). A new
customer accepts the code: the referral is recorded and the REGISTRATION reward is paid. When
the invitee's first private-domain order completes, the order hook records it and pays the
FIRST_ORDER reward. Rewards are points (the loyalty ledger, idempotent by source) or a coupon
granted from a template (idempotent by claim key). When that first order is undone
(refunded in full, cancelled, expired) the FIRST_ORDER points are taken back, and a later
order may become the first order (without paying again: a milestone pays once).

Who is new (may accept an invite):

* not referred before, ever (the first accepted invite wins; ``uq_referral_invitee``);
* not a member since before the campaign started (``member_since < starts_at``), nor
  since before ``NEW_MEMBER_WINDOW`` ago (registering and accepting are one session);
* no counted private-domain order (marketplace history is public-domain: the people a
  campaign wants to bring into the private domain);
* has not invited anyone who accepted (an established inviter is not a newcomer; this also
  keeps the referral graph free of cycles: an invitee never has invitees of their own yet).

Abuse limits, per campaign: one registration per invitee device and per invitee phone (HMAC
digests with a server secret, never the raw values), at most ``max_registrations_per_day``
registrations per inviter per UTC day (refused), and at most ``max_rewarded_per_inviter``
rewarded referrals per inviter: an inviter's referrals beyond that are recorded (stats stay
honest) with their rewards withheld (``inviter_limit``). A customer merge that makes the
inviter and the invitee one person withholds what is still unpaid (``self_referral``).

Concurrency: an accept locks the inviter and the invitee (customer rows, ascending id, as a
merge does), so one inviter's daily limit and cap are counted by one accept at a time, and
two people cannot invite each other at once. The unique constraints on the invitee and on
(campaign, device / phone) are the backstop: the insert is ``ON CONFLICT DO NOTHING``, and a
lost race is answered with the refusal the winner caused.
"""
