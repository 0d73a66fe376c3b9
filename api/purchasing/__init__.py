"""Partner purchasing (进货/订货): price lists by tier, purchase orders against credit (授信)."""
