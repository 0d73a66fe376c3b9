"""What happens to an order after it is placed, one module per step: ``pickup`` (ready for
pickup, then picked up), ``cancel``, ``expiry`` (the job expiring pickups past their window)
and ``refund``. Plain async functions over a session, like every service.

Each step is one guarded status change under the lock order of ``locking``. Reversals
(cancel, expiry, refund) undo what the order did, each under a source of its own so retries
land once: the stock reservation is released, or sold goods restocked; points the order
earned are taken back (never below zero: a shortfall is debt) and points it paid with are
given back; coupons are restored or voided per their template's policy (``undoing``).
"""
