"""The coupons domain's part of the GraphQL schema (listed in ``api/graphql/schema.py``)."""

from api.coupons.graphql.mutations import CouponMutation
from api.coupons.graphql.queries import CouponQuery
from api.coupons.graphql.types import Coupon, CouponTemplate, load_coupons, load_templates
from api.graphql.parts import SchemaParts

schema_parts = SchemaParts(
    query=CouponQuery,
    mutation=CouponMutation,
    types=[Coupon, CouponTemplate],
    nodes={"CouponTemplate": load_templates, "Coupon": load_coupons},
)
