"""Reading jobstore's URLs without connecting: the schemes, the host lists of
``redis+cluster://`` and ``redis+sentinel://``, and hiding the credentials a URL carries
(``redact``) wherever a URL is shown. Pure: imports no redis-py (jobstore.connection builds the
clients)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, unquote_plus

from .errors import ConfigError


SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel", "memory")
# The schemes whose address is a comma-separated list of host:port (seed nodes, sentinels).
HOST_LISTS = ("redis+cluster", "redis+sentinel")


# Credentials in URLs ----------------------------------------------------------------------------
#
# redis-py reads a password from the userinfo (``user:pass@``, ``:pass@``) and from any query
# parameter (``?password=``, ``?ssl_password=``), percent-decoding both. Generated secrets often
# hold ``/ ? # @ %``, which must be percent-encoded for a URL to parse at all; written raw, they
# move where the address seems to end, and the secret would be echoed as a host, a port or a path.
# ``redact`` therefore never trusts a URL to be well formed: it hides everything up to the last
# '@' and every secret-looking query parameter (with all that follows it), and ``connect`` refuses
# a URL it cannot split unambiguously, saying how to fix it without showing it.

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# RFC 3986 userinfo characters, ':' and '%' escapes aside: what a user name shown as is may hold.
_USER_OK = re.compile(r"[A-Za-z0-9\-._~!$&'()*+;=%]*")
# A query parameter whose value is (or may be) a secret: password, ssl_password, token, ...
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|auth|cred", re.IGNORECASE)
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+):([0-9]{1,5})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

PERCENT_ENCODE = ("percent-encode reserved characters in the user name, the password and query "
                  "values, as redis-py requires: urllib.parse.quote(password, safe='') turns "
                  "'/' into %2F, '?' into %3F, '#' into %23, '@' into %40, '%' into %25")


def _split_scheme(url: str) -> tuple[str, str, str]:
    """``(scheme, "://", rest)``; no scheme (or a "scheme" that is not one): ``("", "", url)``."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return "", "", url
    return scheme, sep, rest


def _authority_end(rest: str) -> int:
    """Where the address (``[userinfo@]host[:port]``, or a cluster's seed list) ends in a
    well-formed URL: at the first '/', '?' or '#'."""
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    return min(ends) if ends else len(rest)


def _secret_query_key(piece: str) -> bool:
    return bool(_SECRET_KEY.search(unquote_plus(piece.partition("=")[0])))


def _redact_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    if not _USER_OK.fullmatch(user):
        return "***"  # what would be the user name holds reserved characters: a mangled secret
    return f"{user}:***" if colon else user


def _redact_tail(tail: str) -> str:
    """``host[:port][/path][?query][#fragment]`` with secret query values hidden.

    From the first secret parameter on, the rest of the query is hidden too: a raw '&' in a
    password would otherwise show its end as a parameter of its own. A redis URL has no use
    for a fragment, so one is only ever a secret's tail: hidden as well."""
    tail, hash_, _ = tail.partition("#")
    address, question, query = tail.partition("?")
    shown = []
    for piece in query.split("&") if question else ():
        if _secret_query_key(piece):
            shown.append(f"{piece.partition('=')[0]}=***")
            break
        shown.append(piece)
    return address + (question + "&".join(shown)) + ("#***" if hash_ else "")


def _redact_seeds(rest: str) -> str | None:
    """A well-formed host list (``redis+cluster://`` seeds, ``redis+sentinel://`` sentinels)
    with each host's password hidden, or None when the list is not well formed (the caller
    then hides more)."""
    end = _authority_end(rest)
    if "@" in rest[end:] or "#" in rest:
        return None
    seeds = rest[:end].split(",")
    with_userinfo = [i for i, seed in enumerate(seeds) if "@" in seed]
    # Credentials on the first seed only, or on every seed: anything else may be a password
    # with a raw ',' that split one seed in two.
    if with_userinfo and with_userinfo not in ([0], list(range(len(seeds)))):
        return None
    shown = []
    for seed in seeds:
        userinfo, at, hostport = seed.rpartition("@")
        if not _HOST_PORT.fullmatch(hostport) or "@" in userinfo:
            return None
        if at and not _USER_OK.fullmatch(userinfo.replace(":", "")):
            return None
        shown.append(f"{_redact_userinfo(userinfo)}@{hostport}" if at else hostport)
    return ",".join(shown) + _redact_tail(rest[end:])


def redact(url: str) -> str:
    """The URL with every credential replaced by ``***``: the only form of a URL we ever print.

    Hides the password of the userinfo (``user:***@``; the user name is kept), every query
    parameter that may carry a secret (``password=``, ``sentinel_password=``, ... with what
    follows it), the credentials of every host of a ``redis+cluster://`` or
    ``redis+sentinel://`` list, and any fragment. A URL with raw
    reserved characters in its password cannot be split reliably: then everything up to its
    last '@' is hidden, and if that '@' may sit in a secret query value, everything is.
    """
    if not isinstance(url, str):
        return f"<a {type(url).__name__}, not a URL>"
    scheme, sep, rest = _split_scheme(url)
    head = scheme + sep
    at = -1 if rest.startswith("/") else rest.rfind("@")  # '/...': no userinfo (unix:///path)
    if at < 0:
        return head + _redact_tail(rest)
    if scheme.lower() in HOST_LISTS:
        seeds = _redact_seeds(rest)
        if seeds is not None:
            return head + seeds
    question = rest.find("?")
    if 0 <= question < at and any(_secret_query_key(p) for p in rest[question + 1:at].split("&")):
        return head + "***"  # the last '@' may be inside a secret query value
    return head + _redact_userinfo(rest[:at]) + "@" + _redact_tail(rest[at + 1:])


def _secrets(url: str) -> set[str]:
    """Every string of ``url`` that may be a secret, raw and decoded, to scrub from messages
    that come from other libraries."""
    _, _, rest = _split_scheme(url)
    found = set()
    at = rest.rfind("@")
    if at >= 0:
        for userinfo in (rest[:at], rest[:_authority_end(rest)].rpartition("@")[0]):
            found.update(userinfo.split(":", 1)[1:])
        for seed in rest.split(","):
            found.update(seed.rpartition("@")[0].split(":", 1)[1:])
    question = rest.find("?")
    if question >= 0:
        pieces = rest[question + 1:].split("&")
        secret = False
        for piece in pieces:
            # From a secret parameter on, every part may be a piece of a password with a raw '&'.
            secret = secret or _secret_query_key(piece)
            if secret:
                key, _, value = piece.partition("=")
                found.update((piece, value) if _secret_query_key(piece) else (piece, key, value))
    decoded = {unquote(s) for s in found} | {unquote_plus(s) for s in found}
    return {s for s in found | decoded if len(s) >= 3}


def _scrub(message: str, url: str) -> str:
    for secret in sorted(_secrets(url), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be split into address and credentials unambiguously, or None.

    Never quotes the URL: the caller shows it through :func:`redact`.
    """
    _, _, rest = _split_scheme(url)
    if "#" in rest:
        return f"it contains a '#' (a URL's address ends there); {PERCENT_ENCODE}"
    at, question = rest.rfind("@"), rest.find("?")
    in_socket_path = rest.startswith("/") and (question < 0 or at < question)  # unix:///a@b.sock
    if at >= _authority_end(rest) and not in_socket_path:
        return (f"it has an '@' after the first '/' or '?', so where the password ends is "
                f"ambiguous; {PERCENT_ENCODE}")
    if _BAD_ESCAPE.search(rest):
        return f"it contains a '%' that is not followed by two hex digits; {PERCENT_ENCODE}"
    return None


def cluster_seeds(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """``(seed nodes, username, password)`` of ``redis+cluster://[user:pass@]h:p[,...]``.

    Credentials may be given once (on any seed, usually the first), or on several seeds if
    they are the same everywhere; ``?username=`` and ``?password=`` work too (the userinfo wins).

    :raises ConfigError: (the URL redacted) no seed, a seed that is not ``host:port``, or seeds
        with different credentials.
    """
    nodes, username, password, _ = host_list(url, "seed node")
    return nodes, username, password


def host_list(url: str, what: str) -> tuple[list[tuple[str, int]], str | None, str | None, str]:
    """``(hosts, username, password, rest)`` of a URL whose address is a comma-separated list
    ``[user:pass@]host:port[,...]`` (``what`` names its members in errors: "seed node",
    "sentinel"); ``rest`` is what follows the list (``/path?query``), not parsed here.

    Credentials may be given once (on any host, usually the first), or on several hosts if they
    are the same everywhere; ``?username=`` and ``?password=`` work too (the userinfo wins).

    :raises ConfigError: (the URL redacted) no host, one that is not ``host:port`` with a port
        from 1 to 65535, or hosts with different credentials.
    """
    _, _, rest = _split_scheme(url)
    end = _authority_end(rest)
    nodes, credentials = [], set()
    for seed in filter(None, rest[:end].split(",")):
        userinfo, at, hostport = seed.rpartition("@")
        match = _HOST_PORT.fullmatch(hostport)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ConfigError(f"url {redact(url)!r}: {what}s must be host:port (a port from 1 to "
                              f"65535), comma-separated (a ',' in a password must be %2C; "
                              f"{PERCENT_ENCODE})")
        nodes.append((unquote(match.group(1)).strip("[]"), int(match.group(2))))
        if at:
            user, colon, secret = userinfo.partition(":")
            credentials.add((unquote(user), unquote(secret) if colon else None))
    if not nodes:
        raise ConfigError(f"url {redact(url)!r} names no {what} (host:port)")
    if len(credentials) > 1:
        raise ConfigError(f"url {redact(url)!r}: the {what}s carry different credentials; "
                          f"give them once, or the same on every {what}")
    query = parse_qs(rest[end:].partition("?")[2])
    username = query["username"][0] if query.get("username") else None
    password = query["password"][0] if query.get("password") else None
    if credentials:
        given_user, given_secret = credentials.pop()
        username = given_user or username
        password = given_secret or password
    return nodes, username, password, rest[end:]
