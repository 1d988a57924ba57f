"""Keep passwords and tokens in URLs out of every output.

Every place that shows a transport URL (logs, errors, ``repr``, ``monitor-agent
config``, events) goes through :func:`redact_url`.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_text", "redact_url"]

REDACTED = "***"

# Query parameters that carry credentials in broker URLs.
_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "token", "secret", "auth", "access_token"})

# user:password@ inside any URL embedded in free text.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@\s]*)@")


def redact_url(url: str) -> str:
    """Return *url* with any password (userinfo or secret query parameter) masked.

    ``redis://:s3cret@host:6379/0`` becomes ``redis://:***@host:6379/0``; text
    that does not parse as a URL is passed through :func:`redact_text`.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = urlencode([(k, REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Mask ``scheme://user:password@`` credentials wherever they occur in *text*."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{REDACTED}@", text)
