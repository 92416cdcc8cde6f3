"""Secrets out of what is stored or printed: the parts of a URL that may carry one.

A webhook URL carries its token in the userinfo (``https://bot:TOKEN@host``), the path (Slack-style
``/services/T/B/TOKEN``) or the query (``?token=``); an error raised while using it may quote any of them,
whole or in pieces (``nonnumeric port: 'TOKEN@host'``). ``scrub`` replaces the URL and every such piece, as
written and percent-decoded; ``safe_url`` is what may be shown of a URL: its scheme and host.

A database or storage URL (``postgresql://user:PASSWORD@host/db``, ``s3://bucket/prefix?token=``) keeps
its path (not secret, and what a user needs to see): ``shown_url`` masks its password and query values, and
``mask_credentials`` takes them out of an error's text. Every error path that may quote a URL goes through
one of these (webhooks: notify, teams; databases and storage: doctor).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
SHORTEST = 4  # shorter pieces ("/", "x") are not masked: they would blank unrelated text


def url_secrets(url: str) -> list[str]:
    """Every piece of ``url`` that may be secret, longest first."""
    pieces = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        pieces += [userinfo, *userinfo.split(":", 1)]
    pieces += [parts.path, parts.query, parts.fragment, *parts.path.split("/")]
    pieces += [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
    pieces += [unquote(p) for p in pieces]
    return sorted({p for p in pieces if len(p) >= SHORTEST}, key=len, reverse=True)


def credentials(url: str) -> list[str]:
    """The credential pieces of a URL (the user part's password, every query value), as written and decoded,
    longest first: what to mask in an error about a database or storage URL whose path is not secret."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    userinfo = parts.netloc.rpartition("@")[0]
    pieces = [userinfo.split(":", 1)[1]] if ":" in userinfo else []
    pieces += [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
    pieces += [unquote(p) for p in pieces]
    pieces += [q for p in list(pieces) for q in p.split("@") if "@" in p]  # a password with '@' is cut there
    return sorted({p for p in pieces if len(p) >= SHORTEST}, key=len, reverse=True)


def shown_url(url: str) -> str:
    """A URL fit to print in full: the password of its user part and every query value masked. A URL that
    cannot be taken apart is not printed at all."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.scheme or "://" not in url:
        return MASK
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = hostport
    if at:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = "&".join(f"{k}={MASK}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def mask_credentials(text: str, *urls: str | None) -> str:
    """``text`` with each URL shown as ``shown_url`` and every credential piece of it masked."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, shown_url(url))
        for piece in credentials(url):
            text = text.replace(piece, MASK)
    return text


def safe_url(url: str) -> str:
    """What may be shown of a URL: scheme and host (``https://hooks.example.com/***``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    return f"{parts.scheme}://{host}/{MASK}" if (parts.path.strip("/") or parts.query or parts.username) \
        else f"{parts.scheme}://{host}"


def scrub(text: str, *urls: str | None, label: str = "<url>") -> str:
    """``text`` with each of ``urls`` replaced by ``label`` and without any secret piece of them."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, label)
        for piece in url_secrets(url):
            text = text.replace(piece, MASK)
    return text


__all__ = ["MASK", "credentials", "mask_credentials", "safe_url", "scrub", "shown_url", "url_secrets"]
