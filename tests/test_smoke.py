async def test_partners_query_answers(gql):
    data = await gql("{ partners(first: 5) { edges { node { id name } } } }")
    assert data == {"partners": {"edges": []}}
