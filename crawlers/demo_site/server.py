"""Serve the rendered demo site on loopback from memory, in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from crawlers.demo_site.render import INDEX_PAGE_SIZE, Page, build_site


def _handler(site: dict[str, Page], request_log: list[str] | None) -> type[BaseHTTPRequestHandler]:
    class DemoSiteHandler(BaseHTTPRequestHandler):
        server_version = "LoRAForgeDemoSite/1.0"

        def _page(self) -> Page | None:
            path = urlsplit(self.path).path
            if request_log is not None:
                request_log.append(self.path)
            return site.get(path) or site.get(path.removesuffix("index.html"))

        def _send(self, with_body: bool) -> None:
            page = self._page()
            if page is None:
                page = Page("text/plain; charset=utf-8", b"not found\n")
                self.send_response(404)
            else:
                self.send_response(page.status)
            self.send_header("Content-Type", page.content_type)
            self.send_header("Content-Length", str(len(page.body)))
            self.end_headers()
            if with_body:
                self.wfile.write(page.body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._send(with_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(with_body=False)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass  # the request log above is the record; stderr noise would drown test output

    return DemoSiteHandler


@contextmanager
def serve(
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    per_collection: int | None = None,
    request_log: list[str] | None = None,
    index_page_size: int = INDEX_PAGE_SIZE,
    extra_pages: dict[str, Page] | None = None,
) -> Iterator[str]:
    """Serve the demo site and yield its base URL; every requested path is appended to request_log.

    ``port=0`` picks a free port. ``per_collection`` builds a smaller site from the first N
    documents of each MedQuAD collection; ``extra_pages`` adds paths (tests serve broken pages).
    """
    server = ThreadingHTTPServer((host, port), _handler({}, request_log))
    server.daemon_threads = True
    base_url = f"http://{host}:{server.server_address[1]}"
    # The site is rendered after binding because sitemap.xml and robots.txt need absolute URLs.
    site = build_site(base_url, per_collection, index_page_size)
    site.update(extra_pages or {})
    server.RequestHandlerClass = _handler(site, request_log)
    thread = threading.Thread(target=server.serve_forever, name="demo-site", daemon=True)
    thread.start()
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
