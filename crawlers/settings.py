"""Scrapy settings of the LoRAForge crawlers (``scrapy crawl qa`` from the repo root reads these).

Override any of them per crawl with ``-s NAME=VALUE`` (``loraforge crawl qa --setting``).
"""

from registry.settings import get_settings

BOT_NAME = "loraforge"
SPIDER_MODULES = ["crawlers.spiders"]
NEWSPIDER_MODULE = "crawlers.spiders"

LORAFORGE_CONTACT_URL = "https://github.com/loraforge/loraforge"
USER_AGENT = f"LoRAForge/0.1 (+{LORAFORGE_CONTACT_URL})"
ROBOTSTXT_OBEY = True

# AutoThrottle adapts the delay to the site's latency: a loopback site is crawled in seconds,
# a slow real site gets longer pauses. The small start delay only matters for the first pages.
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.25
AUTOTHROTTLE_MAX_DELAY = 10.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 2.0
DOWNLOAD_DELAY = 0
CONCURRENT_REQUESTS_PER_DOMAIN = 4
DOWNLOAD_TIMEOUT = 30

RETRY_ENABLED = True
RETRY_TIMES = 2

ITEM_PIPELINES = {
    "crawlers.pipelines.CleanPipeline": 100,
    "crawlers.pipelines.DeduplicatePipeline": 200,
    "crawlers.pipelines.ArticleStorePipeline": 300,
}
ARTICLE_STORE_URL = get_settings().resolved_database_url
ARTICLE_STORE_BATCH_SIZE = 10

TELNETCONSOLE_ENABLED = False  # no open port on shared machines
LOG_LEVEL = "INFO"
FEED_EXPORT_ENCODING = "utf-8"
