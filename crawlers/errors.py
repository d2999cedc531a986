"""The crawl component's exception."""

from core.errors import LoraForgeError


class CrawlError(LoraForgeError):
    """A crawl could not start, could not reach its site, or ended in failure."""
