"""Inventory: stock per location and SKU (on hand, reserved, safety level), its movement log
and low-stock alerts (库存预警)."""
