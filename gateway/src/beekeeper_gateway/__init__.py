"""beekeeper-gateway: pull, verify and query a Beekeeper allowlist from inside an API gateway.

The client (`AllowlistClient`, `check()`, the decision table and the WSGI middleware) lives in
`beekeeper_gateway.client`, the ASGI middleware in `beekeeper_gateway.asgi`, and the key format the
bot and the gateway share in `beekeeper_gateway.keyformat`. The names below are the public API.
"""

from beekeeper_gateway import keyformat
from beekeeper_gateway.asgi import AllowlistASGIMiddleware
from beekeeper_gateway.client import (
    ACCEPT,
    ACCEPT_ENCODING,
    ALGORITHMS,
    ALLOWED_ORIGIN,
    ALLOWED_PUBLISHABLE_KEY,
    ALLOWED_REFERRER,
    ALLOWED_SECRET_KEY,
    DECISION_GRANTS,
    DECISION_TABLE,
    DOCUMENT_TYPE,
    HTTP_STATUS,
    KEY_EXPIRED,
    KEY_REVOKED,
    LIST_EXPIRED,
    MALFORMED_KEY,
    NO_CREDENTIALS,
    NOT_LOADED,
    NOT_MODIFIED,
    ORIGIN_NOT_ALLOWED,
    ORIGIN_REQUIRED,
    REASONS,
    SIGNATURE_HEADER,
    UNKNOWN_KEY,
    UNKNOWN_ORIGIN,
    UNKNOWN_REFERRER,
    UNKNOWN_TIER,
    UPDATED,
    AllowlistClient,
    AllowlistError,
    AllowlistMiddleware,
    AuthError,
    Decision,
    DocumentError,
    ExpiredDocumentError,
    FetchError,
    RollbackError,
    Row,
    SignatureError,
    UntrustedKeyError,
    checksum_ok,
    decision_table_markdown,
    decision_vectors,
    host_matches,
    host_of,
    jwk_thumbprint,
)

__version__ = "0.1.0"

__all__ = [
    "ACCEPT", "ACCEPT_ENCODING", "ALGORITHMS", "ALLOWED_ORIGIN", "ALLOWED_PUBLISHABLE_KEY", "ALLOWED_REFERRER",
    "ALLOWED_SECRET_KEY", "DECISION_GRANTS", "DECISION_TABLE", "DOCUMENT_TYPE", "HTTP_STATUS", "KEY_EXPIRED",
    "KEY_REVOKED", "LIST_EXPIRED", "MALFORMED_KEY", "NO_CREDENTIALS", "NOT_LOADED", "NOT_MODIFIED",
    "ORIGIN_NOT_ALLOWED", "ORIGIN_REQUIRED", "REASONS", "SIGNATURE_HEADER", "UNKNOWN_KEY", "UNKNOWN_ORIGIN",
    "UNKNOWN_REFERRER", "UNKNOWN_TIER", "UPDATED", "AllowlistASGIMiddleware", "AllowlistClient", "AllowlistError",
    "AllowlistMiddleware", "AuthError", "Decision", "DocumentError", "ExpiredDocumentError", "FetchError",
    "RollbackError", "Row", "SignatureError", "UntrustedKeyError", "checksum_ok", "decision_table_markdown",
    "decision_vectors", "host_matches", "host_of", "jwk_thumbprint", "keyformat", "__version__",
]
