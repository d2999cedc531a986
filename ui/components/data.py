"""The Data tab: crawl runs, articles by topic, an article browser, and building a snapshot."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import gradio as gr
import pandas as pd

from core.jobs import Job, loraforge_argv
from registry.article_store import list_crawl_runs
from registry.snapshots import StoreFilter, select_articles
from ui.components.common import user_errors
from ui.i18n import I18N

SNAPSHOT_KINDS = ["qa", "chunks", "headings"]
BROWSER_ROWS = 200


def crawl_runs_frame() -> pd.DataFrame:
    columns = ["id", "spider", "status", "pages", "stored", "updated", "dropped", "qa_pairs",
               "started", "error"]
    rows = [[r.id, r.spider, r.status, r.pages_seen, r.items_stored, r.items_updated,
             r.items_dropped, r.qa_pairs,
             r.started_at.strftime("%Y-%m-%d %H:%M") if r.started_at else "", r.error or ""]
            for r in list_crawl_runs()]
    return pd.DataFrame(rows, columns=columns)


def topic_counts_frame() -> pd.DataFrame:
    counts = Counter(a.topic or "(none)" for a in select_articles())
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.DataFrame(rows, columns=["topic", "articles"])


def articles_frame(topic: str | None) -> pd.DataFrame:
    """The first articles (by id) on ``topic``, or on any topic when it is empty."""
    where = StoreFilter(topic=(topic or "").strip() or None)
    rows = [[a.id, a.title, a.topic or "", a.language or "", a.source or "", len(a.text)]
            for a in select_articles(where)[:BROWSER_ROWS]]
    return pd.DataFrame(rows, columns=["id", "title", "topic", "language", "source", "chars"])


def article_text(article_id: float | None) -> str:
    if article_id is None:
        return ""
    for article in select_articles():
        if article.id == int(article_id):
            return f"### {article.title}\n\n{article.text}"
    return f"⚠️ No article #{int(article_id)} in the store."


def refresh_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    with user_errors():
        return crawl_runs_frame(), topic_counts_frame()


def browse(topic: str | None) -> pd.DataFrame:
    with user_errors():
        return articles_frame(topic)


def show_article(article_id: float | None) -> str:
    with user_errors():
        return article_text(article_id)


def build_snapshot(name: str | None, kind: str, topic: str | None,
                   limit: float | None) -> Iterator[str]:
    """Stream ``loraforge data build`` (api ``/build_snapshot``); failure ends in a message."""
    if kind not in SNAPSHOT_KINDS:
        raise gr.Error(f"Kind must be one of {', '.join(SNAPSHOT_KINDS)}.")
    args = ["data", "build", "--kind", kind]
    if (name or "").strip():
        args += ["--name", name.strip()]
    if (topic or "").strip():
        args += ["--topic", topic.strip()]
    if limit:
        args += ["--limit", str(int(limit))]
    update = None
    for update in Job(loraforge_argv(*args)).updates():
        yield update.log
    assert update is not None and update.result is not None
    result = update.result
    yield update.log + (f"\n✓ done: {result.data.get('snapshot')}" if result.ok
                        else f"\n✗ {result.status}: {result.error}")


def build_data_tab() -> None:
    """Lay out the Data tab (api names: ``data``, ``articles``, ``article``, ``build_snapshot``)."""
    with gr.Tab(I18N("tab_data"), id="data"):
        refresh = gr.Button(I18N("refresh"), size="sm")
        runs = gr.Dataframe(value=crawl_runs_frame, label=I18N("crawl_runs"), interactive=False)
        topics = gr.BarPlot(topic_counts_frame, x="topic", y="articles",
                            label=I18N("topic_counts"))
        with gr.Row():
            topic = gr.Textbox(label=I18N("topic_filter"), scale=3)
            article_id = gr.Number(label=I18N("article_id"), precision=0, scale=1)
        table = gr.Dataframe(label=I18N("articles"), interactive=False, max_height=300)
        text = gr.Markdown(label=I18N("article_text"), max_height=300)
        with gr.Row():
            name = gr.Textbox(label=I18N("snapshot_name"))
            kind = gr.Dropdown(SNAPSHOT_KINDS, value="qa", label=I18N("snapshot_kind"))
            limit = gr.Number(None, label="limit", precision=0, minimum=1)
            build = gr.Button(I18N("build_snapshot"), variant="primary")
        build_log = gr.Textbox(label=I18N("log"), lines=8, max_lines=8, autoscroll=True)
    refresh.click(refresh_data, outputs=[runs, topics], api_name="data")
    topic.submit(browse, inputs=topic, outputs=table, api_name="articles")
    article_id.submit(show_article, inputs=article_id, outputs=text, api_name="article")
    build.click(build_snapshot, inputs=[name, kind, topic, limit], outputs=build_log,
                api_name="build_snapshot", concurrency_limit=1, concurrency_id="train")
