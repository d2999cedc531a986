"""``loraforge crawl`` and ``loraforge demo-site`` command groups."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from core import jobs
from crawlers.errors import CrawlError
from crawlers.run import CrawlProgress, run_crawl

console = Console(stderr=True)

crawl_app = typer.Typer(help="Crawl sites into the article store.", no_args_is_help=True)
demo_site_app = typer.Typer(help="The bundled MedQuAD demo site.", no_args_is_help=True)


def _parse_settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CrawlError(f"--setting takes NAME=VALUE, got {pair!r}")
        settings[key.strip()] = value
    return settings


SettingOption = Annotated[list[str] | None, typer.Option(
    "--setting", "-s",
    help="Scrapy setting NAME=VALUE for this crawl, e.g. AUTOTHROTTLE_TARGET_CONCURRENCY=1, "
         "CLEAN_URLS=1, VALIDATE_LANGUAGES=en, DEDUPE_NEAR_THRESHOLD=0.8, SCHEDULER_REDIS_URL=...",
)]
ResumeOption = Annotated[bool, typer.Option(
    "--resume", help="Go on with the last interrupted crawl of this spider.")]
MaxPagesOption = Annotated[int | None, typer.Option(
    "--max-pages", min=1, help="Fetch at most this many pages (default: no limit).")]


def _check_urls(option: str, urls: list[str] | str | None) -> None:
    """Refuse a seed URL Scrapy cannot fetch before any crawl run is recorded."""
    for url in [urls] if isinstance(urls, str) else urls or []:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https"):
            raise CrawlError(f"{option} {url!r} is not an http(s) URL; give a full address such "
                             "as https://example.org/sitemap.xml")
        if not parts.hostname:
            raise CrawlError(f"{option} {url!r} has no host; give a full address such as "
                             "https://example.org/")


def _crawl(spider: str, args: dict[str, object], resume: bool, setting: list[str] | None) -> None:
    spider_args = {k: str(v) for k, v in args.items() if v not in (None, "", [])}
    settings = _parse_settings(setting or [])
    started = time.monotonic()
    with console.status("starting crawl ...") as status:
        def show(progress: CrawlProgress) -> None:
            status.update(
                f"crawl run #{progress.run_id}: {progress.pages} pages, "
                f"{progress.stored} new, {progress.updated} updated, "
                f"{progress.unchanged} unchanged, {progress.dropped} dropped, "
                f"{progress.qa_pairs} QA pairs added")

        run_id = run_crawl(spider, spider_args, resume=resume, settings=settings,
                           on_progress=show)
    jobs.emit_result(crawl_run_id=run_id)
    _print_runs([run_id], title=f"crawl run #{run_id} finished in "
                                f"{time.monotonic() - started:.1f}s")


@crawl_app.command("qa")
def crawl_qa(
    sitemap: str | None = typer.Option(
        None, "--sitemap", help="URL of the site's sitemap.xml: crawl the pages it lists."),
    start_url: str | None = typer.Option(
        None, "--start-url", help="URL to start from: follow links within the same host."),
    topic: str = typer.Option("health", "--topic", help="Topic label stored on every article."),
    focus_area: str | None = typer.Option(
        None, "--focus-area", help="Focus area of every pair (default: the page's h1 or title)."),
    max_pages: MaxPagesOption = None,
    resume: ResumeOption = False,
    setting: SettingOption = None,
) -> None:
    """Crawl question/answer pages (FAQ JSON-LD, <dl> lists, h2/h3 questions) into the store."""
    if not (sitemap or start_url):
        raise CrawlError("give --sitemap URL or --start-url URL")
    _check_urls("--sitemap", sitemap)
    _check_urls("--start-url", start_url)
    _crawl("qa", {"sitemap_url": sitemap, "start_url": start_url, "topic": topic,
                  "max_pages": max_pages, "focus_area": focus_area}, resume, setting)


@crawl_app.command("articles")
def crawl_articles(
    start_url: Annotated[list[str] | None, typer.Option(
        "--start-url", help="URL to start from (repeatable): follow links on its host.")] = None,
    sitemap: Annotated[list[str] | None, typer.Option(
        "--sitemap", help="Sitemap URL (repeatable): crawl the pages it lists.")] = None,
    allowed_domain: Annotated[list[str] | None, typer.Option(
        "--allowed-domain", help="Host to stay on (repeatable; default: the seeds' hosts).",
    )] = None,
    allow: Annotated[list[str] | None, typer.Option(
        "--allow", help="Regex a page URL must match to be fetched and stored (repeatable).",
    )] = None,
    deny: Annotated[list[str] | None, typer.Option(
        "--deny", help="Regex of page URLs never fetched (repeatable).")] = None,
    max_pages: MaxPagesOption = None,
    max_depth: Annotated[int | None, typer.Option(
        "--max-depth", min=0, help="Follow links at most this many hops from a start URL "
                                   "(default: no limit).")] = None,
    topic: str | None = typer.Option(
        None, "--topic", help="Topic label (health, education, history, technology, ...)."),
    topic_map: Annotated[list[str] | None, typer.Option(
        "--topic-map", help="PATTERN=TOPIC (repeatable): pages whose URL matches the regex get "
                            "that topic; --topic labels the rest.")] = None,
    resume: ResumeOption = False,
    setting: SettingOption = None,
) -> None:
    """Crawl article pages (news, blogs, encyclopedias, health portals) into the store."""
    if not (start_url or sitemap):
        raise CrawlError("give --start-url URL or --sitemap URL")
    _check_urls("--start-url", start_url)
    _check_urls("--sitemap", sitemap)
    joined = {k: ",".join(v) if v else None for k, v in {
        "start_urls": start_url, "sitemap_urls": sitemap, "allowed_domains": allowed_domain,
        "allow": allow, "deny": deny, "topic_map": topic_map}.items()}
    _crawl("articles", {**joined, "max_pages": max_pages, "max_depth": max_depth,
                        "topic": topic}, resume, setting)


def _print_runs(ids: list[int] | None = None, limit: int = 20, title: str | None = None) -> None:
    from registry.article_store import list_crawl_runs

    runs = list_crawl_runs(limit=max(limit, len(ids or [])))
    if ids is not None:
        runs = [r for r in runs if r.id in ids]
    table = Table("id", "spider", "status", "started", "pages", "new", "updated", "unchanged",
                  "dropped", "QA added", "start", title=title)
    for r in runs:
        reasons = ", ".join(f"{k}: {v}" for k, v in r.drop_reasons.items())
        table.add_row(
            str(r.id), r.spider, r.status,
            r.started_at.strftime("%Y-%m-%d %H:%M") if r.started_at else "-",
            str(r.pages_seen), str(r.items_stored), str(r.items_updated),
            str(r.items_unchanged), f"{r.items_dropped}" + (f" ({reasons})" if reasons else ""),
            str(r.qa_pairs),
            str(r.args.get("sitemap_url") or r.args.get("start_url") or r.args.get("path") or "-"),
        )
    Console().print(table)


@crawl_app.command("import")
def crawl_import(
    path: Annotated[Path, typer.Argument(help="File or folder to import.")],
    fmt: str | None = typer.Option(
        None, "--format", help="csv (question,answer,source,focus_area), medquad (XML folder) or "
        "jsonl (alpaca, sharegpt, OpenAI messages). Default: guessed from the name."),
    topic: str = typer.Option("health", "--topic", help="Topic label stored on every page."),
    setting: Annotated[list[str] | None, typer.Option(
        "--setting", "-s", help="Pipeline setting NAME=VALUE, e.g. CLEAN_URLS=1.")] = None,
) -> None:
    """Import QA data through the crawl's cleaning, validation, deduplication and store."""
    from rich.progress import Progress

    from crawlers.importers import import_file

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"importing {path.name}", total=None)
        result = import_file(path, fmt, topic=topic, settings=_parse_settings(setting or []),
                             on_progress=lambda done, total: progress.update(
                                 task, completed=done, total=total))
    console.print(f"{result.rows} QA rows in {result.pages} pages: {result.qa_added} pairs added")
    _print_runs([result.run_id], title=f"import run #{result.run_id}")


@crawl_app.command("runs")
def crawl_runs(
    limit: int = typer.Option(20, "--limit", min=1, help="Show this many of the newest runs."),
) -> None:
    """A table of crawl runs with their counts, newest first."""
    _print_runs(limit=limit)


@demo_site_app.command("serve")
def demo_site_serve(
    port: int = typer.Option(8000, "--port", help="Port to listen on (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
) -> None:
    """Serve the MedQuAD demo site until Ctrl-C."""
    from crawlers.demo_site import serve

    with serve(port=port, host=host) as base_url:
        console.print(f"demo site at {base_url}/ (sitemap: {base_url}/sitemap.xml); Ctrl-C stops")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopped")
