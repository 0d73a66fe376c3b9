"""The GraphQL surface of customers, members and levels: thin wrappers over the services, in
``types.py``, ``queries.py`` and ``mutations.py``. ``schema_parts`` is what
``api/graphql/schema.py`` lists in ``PARTS``."""

from __future__ import annotations

from api.customers.graphql.mutations import CustomerMutation
from api.customers.graphql.queries import CustomerQuery
from api.customers.graphql.types import Customer, MemberLevel, load_customers, load_levels
from api.graphql.parts import SchemaParts

schema_parts = SchemaParts(
    query=CustomerQuery,
    mutation=CustomerMutation,
    types=[Customer, MemberLevel],
    nodes={"Customer": load_customers, "MemberLevel": load_levels},
)
