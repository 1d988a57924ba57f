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
# ?password=… (and the other secret parameters) inside free text.
_SECRET_QUERY = re.compile(r"(?P<key>[?&](?:" + "|".join(sorted(_SECRET_PARAMS)) + r")=)[^&\s#]*", re.I)
# A whole URL whose password may hold unescaped '/', '?', '#' or '@': everything
# from the first ':' after the user name up to the *last* '@' is the password.
_RAW_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/?#\s]*):(?P<pw>.*)@(?P<rest>[^@]*)$",
                           re.S)


def redact_url(url: str) -> str:
    """Return *url* with any password (userinfo or secret query parameter) masked.

    ``redis://:s3cret@host:6379/0`` becomes ``redis://:***@host:6379/0``; text
    that does not parse as a URL is passed through :func:`redact_text`. A
    password that was not percent-encoded (``redis://:pa/ss@host``, which
    ``urlsplit`` reads as host ``pa``) is masked too: when in doubt, more is
    hidden rather than less.
    """
    raw = _RAW_USERINFO.match(url)
    if raw and any(c in raw.group("pw") for c in "/?#@"):
        url = f"{raw.group('scheme')}{raw.group('user')}:{REDACTED}@{raw.group('rest')}"
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
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def redact_text(text: str) -> str:
    """Mask ``scheme://user:password@`` credentials and ``?password=…`` wherever they occur in *text*."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{REDACTED}@", text)
    return _SECRET_QUERY.sub(lambda m: m.group("key") + REDACTED, text)
