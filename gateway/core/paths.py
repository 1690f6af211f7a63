"""Request paths and query strings as they may be forwarded to a provider.

The upstream URL is the provider's base URL (from config) plus the request path after `/v1`. That
path is forwarded exactly as the client wrote it, so it must be a plain sequence of segments: a
`..` in any spelling would otherwise let a client walk out of the provider's base path with the
gateway's key (`/v1/../admin/keys`, `/v1/%2e%2e/%2e%2e/internal`). RFC 3986 §3.3 gives the
characters a path may hold; §5.2.4 the dot segments a client or server would remove.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from gateway.errors import InvalidPath

# RFC 3986 pchar (unreserved, pct-encoded, sub-delims, ":" and "@") plus the "/" separator.
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
# The common case, checked in one step: segments of letters, digits, `_`, `-` and `:` (no dot, no
# percent sign, so nothing to decode and no dot segment possible).
_PLAIN = re.compile(r"(?:/[A-Za-z0-9_\-:]+)+")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_FORBIDDEN_DECODED = re.compile(r"[/\\%\x00-\x1f\x7f]")
_DOT_SEGMENTS = frozenset({".", ".."})
# Query parameters that carry a client's own provider key or token (OpenAI-compatible servers,
# Azure, Google, OAuth-style access tokens): dropped when the gateway sends its own key.
KEY_PARAMETERS = frozenset({"api_key", "api-key", "apikey", "key", "access_token"})


def upstream_path(path: str) -> str:
    """Check the path after `/v1` (still percent-encoded) and return it unchanged.

    `""` (the `/v1` root itself) is allowed. Otherwise the path starts with `/` and every segment
    is non-empty, holds only RFC 3986 path characters, and after percent-decoding is neither `.`
    nor `..` (nor one with `;parameters`, which some servers strip) and holds no `/`, `\\`, `%`
    (a second encoding layer) or control character. Raises InvalidPath (400 invalid_path).
    """
    if not path or _PLAIN.fullmatch(path) is not None:
        return path
    if not path.startswith("/") or _PATH_CHARS.fullmatch(path) is None:
        raise _refuse(path, "it holds characters a URL path may not hold")
    if _PERCENT.search(path):
        raise _refuse(path, "it has a '%' that starts no percent-encoded byte")
    for segment in path[1:].split("/"):
        if not segment:
            raise _refuse(path, "it has an empty segment ('//' or a trailing '/')")
        try:
            decoded = unquote(segment, errors="strict") if "%" in segment else segment
        except UnicodeDecodeError:
            raise _refuse(path, "a segment is not UTF-8 once decoded") from None
        if decoded.split(";", 1)[0] in _DOT_SEGMENTS:
            raise _refuse(path, "it has a '.' or '..' segment")
        if _FORBIDDEN_DECODED.search(decoded):
            raise _refuse(path, "a segment decodes to '/', '\\', '%' or a control character")
    return path


def without_key_parameters(query: str) -> str:
    """The query string minus the parameters that carry a provider key (`api_key=...`)."""
    kept = [
        pair
        for pair in query.split("&")
        if unquote(pair.split("=", 1)[0]).lower() not in KEY_PARAMETERS
    ]
    return "&".join(kept)


def _refuse(path: str, why: str) -> InvalidPath:
    shown = path if len(path) <= 200 else path[:200] + "..."
    return InvalidPath(
        f"The path /v1{shown} cannot be forwarded: {why}. Send a plain path such as "
        "/v1/chat/completions.",
        param="path",
    )
