"""Segments (人群): saved queries over customers in a small language, compiled to one SQL
statement; and campaigns that grant coupons or points to a segment's consenting members."""
