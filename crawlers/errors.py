"""The crawl component's exception."""

from registry.errors import LoraForgeError


class CrawlError(LoraForgeError):
    """A crawl could not start, could not reach its site, or ended in failure."""
