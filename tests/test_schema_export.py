from pathlib import Path

from api.graphql.schema import export_sdl

COMMITTED = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_committed_schema_matches_the_code():
    assert COMMITTED.read_text(encoding="utf-8") == export_sdl(), (
        "schema.graphql is stale: run `qudao export-schema` (or `make schema`) and commit it"
    )


def test_contract_names_are_present():
    sdl = export_sdl()
    for name in (
        "node(",
        "nodes(",
        "partners(",
        "partner(",
        "stores(",
        "partnerCreate(",
        "partnerUpdate(",
        "storeCreate(",
    ):
        assert name in sdl, name
