"""``loraforge crawl`` and ``loraforge demo-site`` command groups."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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


@crawl_app.command("qa")
def crawl_qa(
    sitemap: str | None = typer.Option(
        None, "--sitemap", help="URL of the site's sitemap.xml: crawl the pages it lists."),
    start_url: str | None = typer.Option(
        None, "--start-url", help="URL to start from: follow links within the same host."),
    topic: str = typer.Option("health", "--topic", help="Topic label stored on every article."),
    max_pages: int | None = typer.Option(
        None, "--max-pages", min=1, help="Fetch at most this many pages (default: no limit)."),
    resume: bool = typer.Option(
        False, "--resume", help="Go on with the last interrupted crawl of this spider."),
    setting: Annotated[list[str] | None, typer.Option(
        "--setting", "-s",
        help="Scrapy setting NAME=VALUE for this crawl, e.g. AUTOTHROTTLE_TARGET_CONCURRENCY=1.",
    )] = None,
) -> None:
    """Crawl question/answer pages (h1 topic, h2/h3 questions) into the article store."""
    if not (sitemap or start_url):
        raise CrawlError("give --sitemap URL or --start-url URL")
    args = {k: v for k, v in {"sitemap_url": sitemap, "start_url": start_url, "topic": topic,
                              "max_pages": max_pages}.items() if v is not None}
    started = time.monotonic()
    with console.status("starting crawl ...") as status:
        def show(progress: CrawlProgress) -> None:
            status.update(
                f"crawl run #{progress.run_id}: {progress.pages} pages, "
                f"{progress.stored} new, {progress.updated} updated, "
                f"{progress.unchanged} unchanged, {progress.dropped} dropped, "
                f"{progress.qa_pairs} QA pairs added")

        run_id = run_crawl("qa", {k: str(v) for k, v in args.items()}, resume=resume,
                           settings=_parse_settings(setting or []), on_progress=show)
    _print_runs([run_id], title=f"crawl run #{run_id} finished in "
                                f"{time.monotonic() - started:.1f}s")


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
            str(r.qa_pairs), str(r.args.get("sitemap_url") or r.args.get("start_url") or "-"),
        )
    Console().print(table)


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
