"""Growth: touchpoints of public-to-private conversion (公域引流 → 私域转化 → 裂变增长) and the
conversion funnel built from them."""
