#!/usr/bin/env python3
"""The workspace's performance targets (#16), measured on loopback against a real `serve`:

1. the conversation list (what the inbox page asks for) with 100,000 conversations in the
   store: server time per page, by view (all, a queue's unassigned, an agent's own, a text
   search), median and p95 of 30 requests each;
2. the first load of the inbox page in Chromium: bytes transferred (page, script, style and
   the API calls it makes);
3. a customer message posted to the webhook until it shows in an agent's open inbox, measured
   in the browser: p50 and p95 of 40 messages;
4. 500 live streams (`/api/v1/events`) held at once: the server's RSS before and after.

    cargo build --release && python3 benches/workspace.py --binary target/release/switchyard

Needs Playwright for Python and Debian's Chromium (as tests/browser/inbox.py does).
"""

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
import inbox  # noqa: E402  (the browser test's server, fake Graph API and helpers)


def seed(db, n):
    """n contacts, each with one conversation and one message, spread over queues and states."""
    c = sqlite3.connect(db)
    now = int(time.time() * 1000)
    queues = ["support", "complaints", "payments"]
    statuses = ["open", "open", "new", "waiting", "resolved"]
    c.execute("BEGIN")
    c.executemany(
        "INSERT INTO contacts (id, channel, external_id, name, phone, created_at) VALUES (?, 'whatsapp', ?, ?, ?, ?)",
        ((i, f"92300{i:07d}", f"Customer {i}", f"+92300{i:07d}", now - (n - i) * 1000) for i in range(1, n + 1)),
    )
    c.executemany(
        "INSERT INTO conversations (id, contact_id, channel, status, queue, assignee, priority, created_at, updated_at, queued_at, last_customer_message_at) "
        "VALUES (?, ?, 'whatsapp', ?, ?, ?, 'normal', ?, ?, ?, ?)",
        ((i, i, statuses[i % 5], queues[i % 3], ("ayesha" if i % 97 == 0 else None),
          now - (n - i) * 1000, now - (n - i) * 1000, now - (n - i) * 1000, now - (n - i) * 1000) for i in range(1, n + 1)),
    )
    c.executemany(
        "INSERT INTO messages (id, conversation_id, channel, direction, kind, body, provider_id, author, status, created_at) "
        "VALUES (?, ?, 'whatsapp', 'in', 'text', ?, ?, 'customer', 'received', ?)",
        ((i, i, f"order #{10000 + i} kab aye ga? please batayein", f"wamid.seed.{i}", now - (n - i) * 1000) for i in range(1, n + 1)),
    )
    c.execute("COMMIT")
    c.close()


def timed(base, path, token):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return (time.perf_counter() - t0) * 1000, len(body)


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target/release/switchyard"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--conversations", type=int, default=100_000)
    ap.add_argument("--streams", type=int, default=500)
    args = ap.parse_args()
    results = {}

    # 1. The list with 100,000 conversations.
    tmp = tempfile.mkdtemp(prefix="sy-bench-")
    db = f"{tmp}/s.db"
    subprocess.run([args.binary, "migrate", "--db", f"sqlite://{db}"], check=True, capture_output=True)
    t0 = time.time()
    seed(db, args.conversations)
    print(f"seeded {args.conversations} conversations in {time.time() - t0:.1f}s", file=sys.stderr)
    graph = inbox.FakeGraph()
    os.environ["SWITCHYARD_BENCH_DB"] = db
    srv = inbox.Server(args.binary, graph, db=f"sqlite://{db}")
    try:
        srv.agent("ayesha")
        st, tok = srv.call("POST", "/api/v1/tokens", {"role": "agent", "agent": "ayesha"})
        agent = tok["token"]
        views = {
            "all (supervisor), 50 per page": ("/api/v1/conversations?limit=50", inbox.ADMIN),
            "unassigned in the agent's queues": ("/api/v1/conversations?unassigned=true&limit=50", agent),
            "the agent's own": ("/api/v1/conversations?assignee=ayesha&limit=50", agent),
            "open, in one queue": ("/api/v1/conversations?status=open&queue=support&limit=50", inbox.ADMIN),
            "text search": ("/api/v1/conversations?q=Customer%2099999&limit=50", inbox.ADMIN),
        }
        for name, (path, token) in views.items():
            timed(srv.base, path, token)
            ms = sorted(timed(srv.base, path, token)[0] for _ in range(30))
            results[f"list: {name}"] = {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 1)}
            print(name, results[f"list: {name}"], file=sys.stderr)

        # 2 and 3, in the browser.
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            inbox.login(page, srv.base, "ayesha")
            page.wait_for_url(f"{srv.base}/inbox")
            page.wait_for_selector("#live.on")
            time.sleep(1.5)
            sizes = page.evaluate(
                "performance.getEntries().filter(e => e.transferSize !== undefined)"
                ".reduce((s, e) => s + (e.transferSize || e.encodedBodySize || 0), 0)"
            )
            results["first load of the inbox, bytes transferred"] = sizes
            print("first load", sizes, file=sys.stderr)
            page.click("[data-tab=unassigned]")
            # The newest conversation waits least: it is on the list's first page only when
            # filtered, as an agent looking for it would.
            page.fill("#filters input[name=q]", "Bench")
            page.press("#filters input[name=q]", "Enter")
            time.sleep(1)
            lat = []
            for i in range(40):
                name = f"Live {i} Bench"
                t0 = time.perf_counter()
                srv.whatsapp(f"92311{i:07d}", f"wamid.live.{i}", "mujhe insaan se baat karni hai", name)
                page.wait_for_selector(f"#lines .line:has-text('{name}')", timeout=10000)
                lat.append((time.perf_counter() - t0) * 1000)
            lat.sort()
            results["webhook to the open inbox, ms"] = {"p50": round(statistics.median(lat)), "p95": round(lat[int(len(lat) * 0.95) - 1])}
            print("live", results["webhook to the open inbox, ms"], file=sys.stderr)
            browser.close()

        # 4. Live streams held at once.
        before = rss_kb(srv.proc.pid)
        socks = []
        port = int(srv.base.rsplit(":", 1)[1])
        for _ in range(args.streams):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {agent}\r\nAccept: text/event-stream\r\n\r\n".encode())
            socks.append(s)
        time.sleep(3)
        ok = 0
        for s in socks:
            s.settimeout(2)
            try:
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    ok += 1
            except OSError:
                pass
        after = rss_kb(srv.proc.pid)
        results[f"{args.streams} live streams"] = {"answered": ok, "rss_before_mb": round(before / 1024, 1),
                                                   "rss_after_mb": round(after / 1024, 1), "more_mb": round((after - before) / 1024, 1)}
        print("streams", results[f"{args.streams} live streams"], file=sys.stderr)
        for s in socks:
            s.close()
    finally:
        srv.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
