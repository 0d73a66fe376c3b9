"""The segment language (人群圈选): its grammar, the LALR parser built from it, and the limits
of a query. ``api/segments/parser.py`` turns a query into the checked tree of
``api/segments/expressions.py``; ``api/segments/compiler.py`` turns that into SQL.

Grammar (keywords are case-insensitive; AND binds tighter than OR, NOT tighter than AND)::

    expr       := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | atom
    atom       := "(" expr ")" | condition
    condition  := field op value [within]
                | field ["NOT"] "IN" "(" value ("," value)* ")" [within]
    within     := "WITHIN" reldate                 (purchases only)
    op         := "=" | "!=" | "<" | "<=" | ">" | ">="
    value      := number | 'text' | true | false | reldate
    number     := -?digits[.digits]                e.g. 3, 99.5, -10
    'text'     := single-quoted; '' is a quote      e.g. 'gold', 'O''Brien'
    reldate    := -N(d|w|m|y)                       e.g. -30d, -4w, -6m, -1y: that long before now

Fields, by kind (``FIELDS``):

* numbers: ``orders_count``, ``total_spent``, ``avg_order_value``, ``gross_margin``,
  ``rfm_recency``, ``rfm_frequency``, ``rfm_monetary``, ``points_balance`` (all six
  operators and IN). A customer without orders has 0 orders, 0 spent, no RFM scores.
* dates: ``first_order_at``, ``last_order_at``, ``member_since``, ``created_at``:
  ``<``, ``<=``, ``>``, ``>=`` with a relative date (``last_order_at > -30d``: ordered in the
  last 30 days) or an ISO date ``'2026-01-01'`` (a whole UTC day: ``= '2026-01-01'`` is that
  day, ``> '2026-01-01'`` from the next day on) or an ISO time with an offset; years
  1900-2999.
* text: ``first_channel``, ``first_order_channel``, ``gender``, ``rfm_segment``, ``level``
  (a level code), ``recruiting_store`` (a store code), ``recruiting_partner`` (a partner
  code), ``recruiting_guide`` (the guide's staff email): ``=``, ``!=``, ``IN``, ``NOT IN``.
  ``first_order_channel`` (a sales channel), ``gender`` and ``rfm_segment`` take only the
  values stored for them, in any case (``'MINI_PROGRAM'`` is ``'mini_program'``);
  ``first_channel`` any channel name (lowercase letters, digits and _), in any case. Codes
  and emails are matched as stored.
* true/false: ``member``, ``consent.marketing_messages``, ``consent.profiling``
  (``= false`` means not granted: refused or never asked).
* ``tag = 'vip'``, ``tag IN ('a', 'b')``: has the tag (any of them); ``tag != 'x'`` and
  ``NOT tag = 'x'``: does not have it.
* ``attr.<key>`` (key of lowercase letters, digits and _): a customer attribute; text values
  compare with ``=``, ``!=``, ``IN``, ``NOT IN``, numbers with all six operators.
* purchases: ``bought_sku = 'SKU1'``, ``bought_sku IN ('A', 'B')``, ``bought_product =
  'CODE'``, each optionally ``WITHIN -90d``: a counted order (placed, ready, completed or
  partially refunded) with a line of it not wholly refunded; in a partner's segment (or
  a partner's preview), an order of that partner's.

Missing values never match a comparison (a customer without orders has no
``last_order_at``, so ``last_order_at < -30d`` is false for them); ``!=`` and ``NOT IN`` are
the exact opposites of ``=`` and ``IN``, and ``NOT`` of its condition, so they do match them.

Limits: 2000 characters, 50 conditions, 500 values in one IN list, nesting 20 deep. No
control characters (tabs and line breaks only between conditions) and no lone surrogates.
Every mistake is a ``SegmentError`` whose message names the line and column.
"""

from __future__ import annotations

from lark import Lark

MAX_QUERY_CHARS = 2000
MAX_CONDITIONS = 50
MAX_IN_VALUES = 500
MAX_DEPTH = 20

_GRAMMAR = r"""
?start: expr
?expr: or_expr
?or_expr: and_expr (OR and_expr)*
?and_expr: not_expr (AND not_expr)*
?not_expr: NOT not_expr -> negation
    | atom
?atom: "(" expr ")"
    | condition
condition: FIELD OP value within?
    | FIELD NOT? IN "(" value ("," value)* ")" within?
within: WITHIN RELDATE
?value: NUMBER | STRING | RELDATE | TRUE | FALSE

AND: "and"i
OR: "or"i
NOT: "not"i
IN: "in"i
WITHIN: "within"i
TRUE: "true"i
FALSE: "false"i
FIELD: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?/
OP: "=" | "!=" | "<=" | ">=" | "<" | ">"
RELDATE.2: /-\d+[dwmy](?![A-Za-z0-9_])/i
NUMBER: /-?\d+(\.\d+)?/
STRING: /'(?:[^']|'')*'/
%ignore /\s+/
"""

# LALR: linear time on any input (no backtracking), and exact "expected" sets for errors.
PARSER = Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)
