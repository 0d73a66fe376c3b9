"""Marketplace order import (``qudao import orders FILE``): Tmall, JD and Douyin exports.

The modules: ``records`` (what a file holds), ``mapping`` (a record's fields into an order),
``parsing`` (CSV and JSON lines into orders), ``running`` (``import_orders``: the batches),
``buyers`` (the buyers as customers) and ``writing`` (the orders, lines and violations).

The file
--------
CSV with a header row, **one row per order line**; an order's rows repeat its order fields
and must be next to each other (exports list them so; sort a file by order id otherwise)::

    marketplace,order_id,buyer_id,phone,paid_at,paid,sku,quantity,line_paid
    tmall,T1001,tb_buyer_1,13800138000,2026-11-11T00:00:05+08:00,398.00,TEA-250G,2,398.00
    jd,J77,jd_9,,2026-11-11 08:30:00+08:00,129.00,TEA-100G,1,99.00
    jd,J77,jd_9,,2026-11-11 08:30:00+08:00,129.00,CUP-01,1,30.00

or JSON lines (``.jsonl``), **one order per line** with its lines in an array::

    {"marketplace": "tmall", "order_id": "T1001", "buyer_id": "tb_buyer_1",
     "phone": "13800138000", "paid_at": "2026-11-11T00:00:05+08:00", "paid": "398.00",
     "lines": [{"sku": "TEA-250G", "quantity": 2, "paid": "398.00"}]}

(on one line). Column and key names are case-insensitive; other columns or keys are ignored,
so a rejects file (below) can be fixed and imported as it is.

* ``marketplace``: ``tmall``, ``jd`` or ``douyin`` (or 天猫, 京东, 抖音).
* ``order_id``: the marketplace's order id (at most 64 characters); ``buyer_id``: the
  marketplace's buyer id, stored as the identity ``<marketplace>:<buyer id>``.
* ``phone`` (optional): a mainland mobile; a masked one (``138****8000``) counts as none.
* ``paid_at``: ISO 8601 **with a UTC offset** (``+08:00`` or ``Z``); a time without one is
  rejected rather than guessed.
* ``paid``: what the buyer paid for the order, which must equal the sum of ``line_paid``
  (CSV) or of the lines' ``paid`` (JSON lines). Amounts are yuan with at most two decimals
  (JSON numbers or strings); ``quantity`` is a whole number from 1 to 100 000.

What an import does
-------------------
Every order becomes a COMPLETED DELIVERY order on its marketplace's channel, attributed to
the ``partner_id`` given (the partner's marketplace shop, a partner-reported sale) or to HQ's
flagship (none). Lines keep what was paid: a line's subtotal and total are its paid amount,
its unit price that amount per unit (rounded to the cent), its unit cost the SKU's cost price;
coupon and points discounts are zero. Stock is not touched (the marketplace shipped it), and
no subscription events are published: these are history, not live status changes.

**No points and no qualifying spend**: a marketplace purchase is public-domain (公域) business;
points and member levels reward private-domain (私域) purchases, and an import of last year's
Tmall orders must not shower the ledger with points. What the import feeds is the conversion
funnel: the buyer becomes (or is matched to) a customer whose first channel is the
marketplace.

Customers: found by the ``<marketplace>:<buyer id>`` identity (normalized exactly as
``customerUpsert`` does), else by a phone identity equal to the order's phone (the buyer id is
then attached to that customer), else created with ``first_channel`` the marketplace. The
order's phone fills ``contact_phone`` when it is blank and is never attached as a login
identity: a marketplace phone is the recipient's, often not the buyer's, and an identity
would let whoever holds it sign in as the buyer. Duplicate detection (``customerDuplicates``)
compares contact phones with phone identities, so a later merge links them.

A line sold outside the channel's price band is recorded as a PRICE_BELOW_FLOOR (乱价) or
PRICE_ABOVE_CEILING violation, and a channel-exclusive SKU (线上专供款) sold on the marketplace
as EXCLUSIVE_SKU, as placing a partner-reported order records them; the order is imported
all the same (it happened), and so is a SKU no longer on sale.

Idempotent per (marketplace, order id), the orders' unique (channel, external_id): an order
already on file is skipped, so a re-run imports nothing; concurrent imports of one file import
each order once (INSERT ... ON CONFLICT DO NOTHING).

Rejected orders are never half imported: any bad row (unknown SKU, bad quantity, money or time,
paid ≠ Σ lines, ...) rejects its whole order, every row of it with a reason; the other orders
go on. An order whose CSV rows are not together is rejected whole, and if its first rows were
already imported (an earlier batch of this run) that order is withdrawn. Order ids seen in
this run are kept in a scratch SQLite file on disk, so the check is exact at flat memory.

Streaming: rows are read one by one, ``batch_size`` orders go into one transaction (committed
per batch), and nothing of a batch is kept after it, so memory stays flat for any file size.
A physical line longer than 64 KiB is rejected without being held whole. A batch costs at
most eleven statements however many orders it holds (plus one per violation): the orders
already on file, the SKUs (cached for the run), the buyers' and phones' customers, the new
customers and identities, the orders, lines and events, each in one statement.
"""
