"""Analytics: per-customer metrics maintained with every order change, lifetime attribution of
orders to the recruiting store and guide, channel spend, and the metrics built on them (LTV,
repurchase, cohort retention, RFM, CAC, ROI)."""
