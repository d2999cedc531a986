"""The bundled demo site: MedQuAD documents rendered as HTML pages, served on loopback.

``serve()`` runs it; ``ground_truth()`` lists every public QA pair as a crawler should extract it.
"""

from __future__ import annotations

from crawlers.demo_site.render import (
    BOILERPLATE,
    LAYOUTS,
    PRIVATE_PATH,
    Page,
    layout_of,
    select_documents,
)
from crawlers.demo_site.server import serve
from crawlers.text import clean_text, collapse_whitespace, join_blocks

__all__ = ["BOILERPLATE", "LAYOUTS", "PRIVATE_PATH", "Page", "ground_truth", "serve"]


def ground_truth(base_url: str, per_collection: int | None = None) -> list[dict[str, str]]:
    """One dict (url, focus_area, question, answer, qtype, layout) per QA pair on the public pages.

    The pairs do not depend on the page's layout: whichever markup carries them, a crawler must
    recover the same question and answer.
    """
    base_url = base_url.rstrip("/")
    return [
        {
            "url": base_url + doc.path,
            "focus_area": collapse_whitespace(doc.focus),
            "question": collapse_whitespace(qa.question),
            "answer": clean_text(join_blocks(list(qa.answer_blocks))),
            "qtype": qa.qtype,
            "layout": layout_of(i),
        }
        for i, doc in enumerate(select_documents(per_collection))
        for qa in doc.qa_pairs
    ]
