"""Partners (渠道伙伴) and their stores (门店): the channel master data."""
