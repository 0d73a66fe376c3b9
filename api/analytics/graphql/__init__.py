"""GraphQL surface of the analytics reports (LTV, repurchase, retention, RFM, CAC/ROI,
attributed sales), channel spend, and ``Customer.metrics``: thin wrappers over the report
modules (api/analytics/reports/) and api/analytics/spend.py.

Every report needs analytics:read and answers within the caller's scope (a partner: its own
recruited customers, attributed orders and spend). Gross margin, and ROI which reveals it,
are HQ's alone, like the brand's cost everywhere (``Order.costTotal``, ``Sku.costPrice``):
null for everyone else. Bad arguments (a range that ends before it starts or spans more than
three years, a date outside 2000-2100, a malformed id) come back as the report's ``errors``
with a code, never as an exception. ``customer_metrics`` is what the customers domain wires
into ``Customer.metrics``, so no module here imports ``api.customers.schema`` at module
level; member levels are reached lazily.

``inputs``: the arguments' enums, ids and errors; ``types``: the report rows and what they
are about; ``customer_metrics``; ``channel_spend``: the spend node, its filter and input;
``queries``, ``mutations``; ``schema``: the domain's ``schema_parts``.
"""
