"""Turn a response into HTML text, or say why the page is dropped: shared by every spider.

Real sites send PDFs under HTML links, declare one charset and send another, and serve pages
that are not HTML at all. Each case is a named reason in the crawl run, never a crash.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from scrapy.http import Response, TextResponse

HTML_TYPES = ("text/html", "application/xhtml+xml")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)")


@dataclass(frozen=True)
class PageText:
    html: str | None  # None: the page is dropped for ``reason``
    reason: str | None = None  # why it was dropped, or what was repaired (kept pages)


def _codec(name: str | None) -> str | None:
    try:
        return codecs.lookup(name).name if name else None
    except LookupError:
        return None


def html_text(response: Response) -> PageText:
    """The page's HTML as text, decoded with the charset the bytes really use."""
    content_type = response.headers.get(b"Content-Type", b"").decode("latin-1").lower()
    if not isinstance(response, TextResponse) or (
            content_type and not content_type.startswith(HTML_TYPES)):
        return PageText(None, f"not html ({content_type.split(';')[0] or 'unknown type'})")
    body = response.body
    declared = _codec(response.encoding)
    # Scrapy reads iso-8859-1 as its superset cp1252; the log names what the site declared.
    named = _CHARSET.search(content_type)
    declared_name = named.group(1) if named else response.encoding
    try:
        utf8 = body.decode("utf-8")
    except UnicodeDecodeError:
        utf8 = None
    if utf8 is not None and declared != "utf-8" and not body.isascii():
        # Non-ASCII bytes that happen to be valid UTF-8 are UTF-8 with near certainty.
        text, note = utf8, f"declared {declared_name} but the body is UTF-8"
    elif utf8 is None and declared == "utf-8":
        # cp1252 decodes every byte but five; the web's mislabelled pages are mostly this.
        text = body.decode("cp1252", errors="replace")
        note = "declared utf-8 but the body is not; read as cp1252"
    else:
        text, note = response.text, None
    # lxml refuses str input that carries an XML encoding declaration.
    return PageText(_XML_DECLARATION.sub("", text, count=1), note)
