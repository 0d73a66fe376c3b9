"""Orders from every channel, buy online and pick up in store (BOPIS), cancels, refunds and
the marketplace import."""
