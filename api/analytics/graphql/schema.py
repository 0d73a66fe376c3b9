"""The analytics domain's part of the schema (listed in ``api/graphql/schema.py``)."""

from __future__ import annotations

from api.analytics.graphql.channel_spend import ChannelSpend, load_spends
from api.analytics.graphql.mutations import AnalyticsMutation
from api.analytics.graphql.queries import AnalyticsQuery
from api.graphql.parts import SchemaParts

schema_parts = SchemaParts(
    query=AnalyticsQuery,
    mutation=AnalyticsMutation,
    types=[ChannelSpend],
    nodes={"ChannelSpend": load_spends},
)
