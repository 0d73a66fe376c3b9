"""Reports for marketing and channel operations: LTV, repurchase, cohort retention, RFM
distribution, CAC and ROI per channel, attributed sales, and the channel spend they divide.

One module per report: ``ltv``, ``repurchase``, ``retention``, ``rfm``, ``cac`` (CAC and
ROI), ``attributed_sales``; what they share (the acquired customers' counted orders, who
sees what) is ``counted``. The calendar is ``api/analytics/business_calendar.py``, the
argument checks ``api/analytics/arguments.py``, the spend ``api/analytics/spend.py``.

Where the numbers come from:

* LTV, repurchase, retention and CAC/ROI are computed from ``customer_order`` and
  ``order_line`` (the source of truth), so any range is exact and the reports never wait on
  the metrics table. Each is one statement (CAC/ROI two: the spend, then the customers):
  it picks the customers acquired in the range first (a counted order in it and none
  before), then a window function numbers only their counted orders, the first one
  (``seq = 1``) is the acquisition, and the grouping runs in the database.
* The RFM distribution and ``Customer.metrics`` read ``customer_metrics``: RFM scores exist
  only there (the scoring run sets them), and a customer's totals are what that table is for.
* Attributed sales read ``order_attribution`` joined to the counted orders.

Shared definitions (COMMON to every analytics consumer): a counted order has a status in
``COUNTED_STATUSES`` and a customer; its revenue is ``total - refunded_amount``; its gross
margin is revenue minus the cost of what was kept (``cost_total`` minus the cost of the
refunded quantities). Only live (not merged) customers count: merges move orders to the
survivor. Money sums only the orders (and spend) in the report's currency, converting
nothing; who was acquired when (the first counted order) looks at orders in any currency.

Calendar: cohort months and weeks (Monday first) and the days of a ``Date`` range follow the
business calendar, China Standard Time (UTC+08:00, no daylight saving): an order paid at
2026-01-31T20:00Z (04:00 on 1 February in Beijing) belongs to February's cohort.

Who sees what: HQ everything; a partner principal only the customers it recruited
(``customer.recruited_partner_id``), the orders attributed to it (``order_attribution``) and
its own spend; a filter naming another partner's id just finds nothing, exactly like an id
that does not exist. Members see nothing (the schema also requires analytics:read). Gross
margins are computed for every caller; the schema shows them (and ROI, which reveals them)
to HQ only, as it does the brand's cost everywhere.

Dates and times are accepted from 2000-01-01 to 2100-12-31 (business calendar): no real
report or spend lies outside, and the calendar arithmetic stays far from the ends of Python's
dates.
"""
