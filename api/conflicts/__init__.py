"""Channel conflict: price violations (乱价) and cross-region selling (窜货), detected from the
order stream and coupon redemptions."""
