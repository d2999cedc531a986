"""robots.txt that fails closed, as RFC 9309 asks.

Scrapy's own middleware treats a robots.txt it could not fetch (a network error, a request
dropped while the crawler was busy or closing, a 5xx answer) as "everything allowed". A crawler
that obeys robots.txt must not read a site's private pages because the site was briefly down,
so here those cases mean "nothing allowed" for that host (RFC 9309 §2.3.1.4), with one warning
that says why. A missing robots.txt (4xx) still allows everything (§2.3.1.3).
"""

from __future__ import annotations

import logging

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.http import Response

logger = logging.getLogger(__name__)


class DisallowAll:
    """A robots parser that refuses every URL: the RFC's answer to an unreachable robots.txt."""

    def allowed(self, url: str, user_agent: str | bytes) -> bool:
        return False


class FailClosedRobotsTxtMiddleware(RobotsTxtMiddleware):
    def _refuse_host(self, netloc: str, why: str) -> None:
        logger.warning("robots.txt of %s %s; obeying RFC 9309, nothing on %s is fetched",
                       netloc, why, netloc)
        self._stats.inc_value("robotstxt/unreachable")
        pending = self._parsers[netloc]
        self._parsers[netloc] = DisallowAll()
        if hasattr(pending, "callback"):
            pending.callback(self._parsers[netloc])

    async def _parse_robots(self, response: Response, netloc: str, request) -> None:
        if response.status >= 500:
            self._stats.inc_value("robotstxt/response_count")
            self._stats.inc_value(f"robotstxt/response_status_count/{response.status}")
            self._refuse_host(netloc, f"answered HTTP {response.status}")
            return
        await super()._parse_robots(response, netloc, request)

    def process_response(self, request, response, spider=None):
        """Check again once the page is here: two scrapy-redis crawlers sharing one queue have
        (rarely, under load, cause not found yet) fetched a disallowed page; it is dropped
        here, never stored, and the warning names it."""
        if request.meta.get("dont_obey_robotstxt"):
            return response
        from scrapy.exceptions import IgnoreRequest
        from scrapy.utils.httpobj import urlparse_cached

        parser = self._parsers.get(urlparse_cached(request).netloc)
        if hasattr(parser, "allowed"):  # parsed (not pending): the same check as on request
            try:
                self.process_request_2(parser, request)
            except IgnoreRequest:
                logger.warning("%s was fetched although robots.txt forbids it; dropped",
                               request.url)
                self._stats.inc_value("robotstxt/forbidden_late")
                raise
        return response

    def _robots_error(self, exc: Exception, netloc: str) -> None:
        self._stats.inc_value(f"robotstxt/exception_count/{type(exc)}")
        if self._stats.get_value("loraforge/first_error") is None:  # a dead host says so
            self._stats.set_value("loraforge/first_error", f"robots.txt of {netloc}: {exc}")
        self._refuse_host(netloc, f"could not be fetched ({type(exc).__name__}: {exc})")
