"""Scrapy settings of the LoRAForge crawlers (``scrapy crawl qa`` from the repo root reads these).

Override any of them per crawl with ``-s NAME=VALUE`` (``loraforge crawl qa --setting``).
"""

BOT_NAME = "loraforge"
SPIDER_MODULES = ["crawlers.spiders"]
NEWSPIDER_MODULE = "crawlers.spiders"

LORAFORGE_CONTACT_URL = "https://github.com/loraforge/loraforge"
USER_AGENT = f"LoRAForge/0.1 (+{LORAFORGE_CONTACT_URL})"
ROBOTSTXT_OBEY = True
# Scrapy's robots middleware allows everything when robots.txt cannot be fetched; ours refuses.
DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "crawlers.robots.FailClosedRobotsTxtMiddleware": 100,
}

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
# Article pages are rarely over 2 MB; bigger responses are archives or traps, and are dropped
# with a logged reason instead of filling memory.
DOWNLOAD_MAXSIZE = 8 * 1024 * 1024
DOWNLOAD_WARNSIZE = 2 * 1024 * 1024

# Page extraction runs in this many worker processes beside the crawl ("auto": one per spare
# core, at most 4; 0: in the crawl's own process). See crawlers/offload.py.
EXTRACT_PROCESSES = "auto"

# Scrapy runs this many asyncio tasks per response to pass its items through the pipelines.
# Our spiders yield one item per page and our pipelines never wait, so the default 100 only
# cost a tenth of the crawl in task bookkeeping.
CONCURRENT_ITEMS = 4

ITEM_PIPELINES = {
    "crawlers.pipelines.CleanPipeline": 100,
    "crawlers.pipelines.ValidatePipeline": 150,
    "crawlers.pipelines.DeduplicatePipeline": 200,
    "crawlers.pipelines.ArticleStorePipeline": 300,
}
# Cleaning steps (crawlers.text.CleanSteps); punctuation, digits and case are always kept.
CLEAN_MARKUP = True
CLEAN_WHITESPACE = True
CLEAN_EMOJI = True
CLEAN_EMOTICONS = False
CLEAN_URLS = False  # answers cite sites ("visit www.nei.nih.gov"); switch on for social text
CLEAN_HASHTAGS = False
# Validation: answers shorter than this are dropped, pages in other languages too (empty: any).
VALIDATE_MIN_ANSWER_CHARS = 2
VALIDATE_MIN_TEXT_CHARS = 0
VALIDATE_LANGUAGES: list[str] = []
# The articles spider skips pages whose main region is mostly link text (index and tag pages).
ARTICLES_MAX_LINK_DENSITY = 0.5
# Near duplicates: Jaccard similarity of word 3-shingles, against this run and the store.
DEDUPE_NEAR_THRESHOLD = 0.9
# Empty: the store LoRAForge is configured for (LORAFORGE_DATABASE_URL, or the SQLite file in
# LORAFORGE_HOME), read when a crawl opens, not when this module is imported.
ARTICLE_STORE_URL = ""
# Pages per store transaction, and the longest a parsed page waits for one (seconds).
ARTICLE_STORE_BATCH_SIZE = 100
ARTICLE_STORE_FLUSH_SECONDS = 2.0

TELNETCONSOLE_ENABLED = False  # no open port on shared machines
LOG_LEVEL = "INFO"
FEED_EXPORT_ENCODING = "utf-8"
