"""Screenshot the chat app answering a held-out question with an adapter, in headless Chromium.

    LORAFORGE_HOME=... python scripts/screenshot_chat.py demo-lora:v1 \
        --out docs/screenshots/smollm2-demo-lora.png

Starts the app on a free loopback port with the adapter's base, picks the adapter in the page,
sends the first question of its snapshot's test split (questions it never trained on), waits
until the streamed reply stops growing and saves the page. The question, the reference answer
and the reply are printed, so the picture can be checked against the data. Needs Debian's
``chromium`` and the ``dev`` extra (playwright).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def held_out_question(snapshot_path: str, index: int) -> tuple[str, str]:
    with open(Path(snapshot_path) / "test.jsonl", encoding="utf-8") as lines:
        chat = [json.loads(line)["messages"] for line in lines][index]
    return chat[-2]["content"], chat[-1]["content"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", help="Adapter label, e.g. demo-lora:v1.")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write.")
    parser.add_argument("--question", type=int, default=0,
                        help="Which test-split question (default: the first).")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="Reply budget.")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"error: {CHROMIUM} is missing; install it with `apt-get install "
                         "chromium`")

    from playwright.sync_api import expect, sync_playwright

    from registry.adapters import get_adapter
    from registry.snapshots import find_snapshot
    from ui.cli import launch

    adapter = get_adapter(args.adapter)
    snapshot = find_snapshot(adapter.snapshot_name) if adapter.snapshot_name else None
    if snapshot is None or not snapshot.path:
        raise SystemExit(f"error: adapter {adapter.label} records no snapshot to ask from")
    question, reference = held_out_question(snapshot.path, args.question)
    app, url = launch(host="127.0.0.1", port=free_port(), block=False, base=adapter.base_name)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            choice = f"{adapter.base_name} › {adapter.label}"
            box = page.locator("#adapter-picker input")
            box.click()
            page.locator(f"#{box.get_attribute('aria-controls')}").get_by_role(
                "option", name=choice, exact=True).click()
            expect(box).to_have_value(choice)
            page.get_by_text("Generation settings").click()
            page.get_by_label("Max new tokens").first.fill(str(args.max_new_tokens))
            page.get_by_text("Generation settings").click()
            page.locator("#message textarea").fill(question)
            page.locator("#send").click()
            reply = page.locator('#chatbot [data-testid="bot"]').last
            reply.wait_for(timeout=120_000)
            text, steady_since = "", time.monotonic()
            while time.monotonic() - steady_since < 4:  # done once it stops growing
                time.sleep(0.5)
                now = reply.inner_text()
                if now != text:
                    text, steady_since = now, time.monotonic()
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        app.close()
    print(f"question:  {question}\nreference: {reference}\nreply:     {text}\n→ {args.out}")


if __name__ == "__main__":
    main()
