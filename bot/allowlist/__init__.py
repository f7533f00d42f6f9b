"""allowlist: what gateways pull: the versioned change log, building, caching and serving the
signed document (ETag, deltas, formats 1 and 2), signing keys, gateway credentials, OpenAPI.
May import: core, github."""
