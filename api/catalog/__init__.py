"""Catalog: products, SKUs, suggested retail prices, per-channel price bands (线上线下价格浮动范围)
and channel-exclusive SKUs (线上专供款)."""
