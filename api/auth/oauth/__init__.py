"""The OAuth 2 authorization server: authlib's synchronous server behind Starlette routes.

authlib has no async server, so each endpoint call runs in a worker thread
(``anyio.to_thread``); the hooks authlib calls (find a client, save a token, ...) hop back
onto the event loop (``anyio.from_thread``) to use the same async database and cache as the
API. The token endpoint is not the hot path; GraphQL requests never come here.
"""
