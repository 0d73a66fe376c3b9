"""GraphQL core: schema assembly, context, Relay ids and connections, errors, limits."""
