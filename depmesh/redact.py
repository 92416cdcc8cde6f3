"""Secrets out of what is stored or printed: the parts of a URL that may carry one.

A webhook URL carries its token in the userinfo (``https://bot:TOKEN@host``), the path (Slack-style
``/services/T/B/TOKEN``) or the query (``?token=``); an error raised while using it may quote any of them,
whole or in pieces (``nonnumeric port: 'TOKEN@host'``). ``scrub`` replaces the URL and every such piece, as
written and percent-decoded; ``safe_url`` is what may be shown of a URL: its scheme and host.
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


__all__ = ["MASK", "safe_url", "scrub", "url_secrets"]
