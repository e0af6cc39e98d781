#!/usr/bin/env python3
"""The workspace in a real browser (Debian's Chromium, driven by Playwright).

Starts `switchyard serve` on a fresh SQLite file with the example pack and the sandbox channel
(sends are printed on its standard output), creates agents with passwords through the admin
API, and checks what an agent and a supervisor would notice: log-in and log-out, a signed
webhook message appearing live, two agents claiming at once, a reply reaching the outbox once,
a note never reaching it, only templates when the window is closed, the trace naming the rule,
a phone-sized layout, and no serious accessibility violation (axe-core). Screenshots go to
target/browser/.

    python3 tests/browser/inbox.py [--binary target/debug/switchyard] [--chromium /usr/bin/chromium]
        [--axe target/ci-node/node_modules/axe-core/axe.min.js]
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import struct
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "browser-admin-token-of-at-least-32-chars"
APP_SECRET = "browser-app-secret"
SHOP_SECRET = "browser-shop-secret"
PASSWORD = "correct horse battery staple"
SHOTS = ROOT / "target" / "browser"


def png(width=96, height=64):
    """A real PNG: a red-and-white stripe picture, big enough to see in a screenshot."""
    rows = b"".join(
        b"\x00" + b"".join(b"\xc0\x20\x30" if (x // 8) % 2 else b"\xff\xff\xff" for x in range(width))
        for _ in range(height)
    )
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class FakeGraph:
    """The Graph API on loopback: takes sends (recorded), answers media ids with a download URL,
    and serves the bytes to the bearer token."""

    def __init__(self):
        self.sent = []
        self.media = {}
        graph = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, code, body, kind="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                if self.path.endswith("/messages"):
                    if body.get("status") == "read":
                        return self.reply(200, {"success": True})
                    graph.sent.append(body)
                    return self.reply(200, {"messages": [{"id": f"wamid.out.{len(graph.sent)}"}]})
                self.reply(404, {"error": {"message": "no such route"}})

            def do_GET(self):
                if self.headers.get("Authorization") != "Bearer TEST-TOKEN":
                    return self.reply(401, {"error": {"message": "bad token"}})
                path = self.path.split("?")[0]
                if path.startswith("/dl/") and path[4:] in graph.media:
                    mime, data = graph.media[path[4:]]
                    return self.reply(200, data, mime)
                mid = path.rsplit("/", 1)[-1]
                if mid in graph.media:
                    mime, data = graph.media[mid]
                    return self.reply(200, {"url": f"{graph.base}/dl/{mid}", "mime_type": mime,
                                            "sha256": hashlib.sha256(data).hexdigest(), "file_size": str(len(data))})
                self.reply(400, {"error": {"message": "Unsupported get request"}})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.http.server_port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def texts(self):
        return [b.get("text", {}).get("body", "") for b in self.sent]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, graph, db=None):
        self.dir = tempfile.mkdtemp(prefix="sy-browser-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        for k in ["WHATSAPP_PHONE_NUMBER_ID", "WHATSAPP_ACCESS_TOKEN", "SHOPIFY_SHOP", "SHOPIFY_ACCESS_TOKEN"]:
            env.pop(k, None)
        env.update(
            WHATSAPP_PHONE_NUMBER_ID="111",
            WHATSAPP_ACCESS_TOKEN="TEST-TOKEN",
            WHATSAPP_API_BASE=graph.base,
            SWITCHYARD_ADMIN_TOKEN=ADMIN,
            WHATSAPP_APP_SECRET=APP_SECRET,
            SHOPIFY_WEBHOOK_SECRET=SHOP_SECRET,
            RUST_LOG="warn",
        )
        self.proc = subprocess.Popen(
            [binary, "serve", "--rules", str(ROOT / "examples/pk-ecommerce"),
             "--db", db or f"sqlite://{self.dir}/s.db", "--listen", f"127.0.0.1:{self.port}", "--api-rate", "0"],
            stdout=subprocess.PIPE, stderr=open(f"{self.dir}/serve.log", "w"), env=env, text=True,
        )
        self.out = []
        threading.Thread(target=self._read, daemon=True).start()
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{self.base}/readyz", timeout=1)
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("serve did not start: " + open(f"{self.dir}/serve.log").read())

    def _read(self):
        for line in self.proc.stdout:
            self.out.append(line)

    def sandbox(self):
        """What the sandbox channel sent so far (one line per message)."""
        return "".join(self.out)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, method, path, body=None, headers=None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        h = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text.startswith("{") else text)

    def agent(self, ident, role="agent", queues=("support", "complaints", "payments")):
        st, v = self.call("POST", "/api/v1/agents", {"id": ident, "role": role, "queues": list(queues), "capacity": 5})
        assert st == 201, (st, v)
        st, v = self.call("POST", f"/api/v1/agents/{ident}/password", {"password": PASSWORD})
        assert st == 204, (st, v)

    def whatsapp(self, phone, wamid, text, name="Customer", media=None):
        msg = {"from": phone, "id": wamid, "timestamp": str(int(time.time())), "type": "text", "text": {"body": text}}
        if media:
            msg = {"from": phone, "id": wamid, "timestamp": str(int(time.time())), "type": "image", "image": media}
        body = json.dumps({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": "111"},
                "contacts": [{"profile": {"name": name}, "wa_id": phone}],
                "messages": [msg]}}]}],
        }).encode()
        sig = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        st, v = self.call("POST", "/webhooks/whatsapp", body, {"X-Hub-Signature-256": sig, "Authorization": ""})
        assert st == 200, (st, v)

    def shopify_order(self, number, phone):
        body = json.dumps({
            "id": 9000 + number, "name": f"#{number}", "total_price": "3499.00",
            "payment_gateway_names": ["Cash on Delivery (COD)"],
            "customer": {"first_name": "Hina", "phone": f"+{phone}"},
            "shipping_address": {"phone": f"+{phone}"},
        }).encode()
        import base64
        sig = base64.b64encode(hmac.new(SHOP_SECRET.encode(), body, hashlib.sha256).digest()).decode()
        st, v = self.call("POST", "/webhooks/shopify", body, {
            "X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": f"wh-{number}",
            "X-Shopify-Hmac-Sha256": sig, "Authorization": ""})
        assert st == 200, (st, v)

    def conversation_of(self, phone):
        for _ in range(100):
            st, v = self.call("GET", f"/api/v1/conversations?q={phone}")
            if st == 200 and v["conversations"]:
                return v["conversations"][0]["id"]
            time.sleep(0.1)
        raise AssertionError(f"no conversation for {phone}")


def login(page, base, agent, password=PASSWORD):
    page.goto(f"{base}/login")
    page.fill("#agent", agent)
    page.fill("#password", password)
    page.click("button[type=submit]")


def until(cond, what, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target/debug/switchyard"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--axe", default=str(ROOT / "target/ci-node/node_modules/axe-core/axe.min.js"))
    args = ap.parse_args()
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("failed-*.png"):
        old.unlink()

    graph = FakeGraph()
    srv = Server(args.binary, graph)
    failures = []
    try:
        srv.agent("ayesha")
        srv.agent("bilal")
        srv.agent("sara", role="supervisor")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            ctx = {}

            def case(name):
                def wrap(f):
                    t0 = time.time()
                    try:
                        f()
                        print(f"ok    {name} ({time.time() - t0:.1f}s)")
                    except Exception:
                        failures.append(name)
                        print(f"FAIL  {name}\n{traceback.format_exc()}")
                        for n, c in ctx.items():
                            for i, p in enumerate(getattr(c, "pages", [])):
                                p.screenshot(path=str(SHOTS / f"failed-{name.replace(' ', '_')}-{n}-{i}.png"))
                    return f
                return wrap

            @case("log in and log out")
            def _():
                c = ctx["ayesha"] = browser.new_context(viewport={"width": 1280, "height": 800})
                p = c.new_page()
                p.goto(f"{srv.base}/inbox")
                expect(p).to_have_url(f"{srv.base}/login")
                login(p, srv.base, "ayesha", "not the password")
                expect(p.locator(".error")).to_contain_text("Wrong agent id or password")
                login(p, srv.base, "ayesha")
                expect(p).to_have_url(f"{srv.base}/inbox")
                expect(p.locator("#live")).to_have_class("on", timeout=10000)
                p.click("#logout")
                expect(p).to_have_url(f"{srv.base}/login")
                p.goto(f"{srv.base}/inbox")
                expect(p).to_have_url(f"{srv.base}/login")
                login(p, srv.base, "ayesha")
                expect(p).to_have_url(f"{srv.base}/inbox")

            @case("a webhook message appears in the open inbox without a reload")
            def _():
                p = ctx["ayesha"].pages[0]
                p.click("[data-tab=unassigned]")
                expect(p.locator("#live")).to_have_class("on", timeout=10000)
                p.evaluate("window.__loaded = true")
                srv.whatsapp("923001110001", "wamid.b1", "mujhe insaan se baat karni hai, please connect me to a human agent", "Hina Baig")
                expect(p.locator("#lines .line", has_text="Hina Baig")).to_be_visible(timeout=10000)
                assert p.evaluate("window.__loaded") is True, "the page was reloaded"

            @case("two agents claim at once: one owns it, the other sees it taken and cannot send")
            def _():
                c2 = ctx["bilal"] = browser.new_context(viewport={"width": 1280, "height": 800})
                p2 = c2.new_page()
                login(p2, srv.base, "bilal")
                p1 = ctx["ayesha"].pages[0]
                for p in (p1, p2):
                    p.click("[data-tab=unassigned]")
                    p.click("#lines .line:has-text('Hina Baig')")
                    expect(p.locator("#claim")).to_be_visible()
                # Both click as close together as two browsers allow.
                p1.evaluate("document.querySelector('#claim').click()")
                p2.evaluate("document.querySelector('#claim').click()")
                conv = srv.conversation_of("923001110001")
                owner_of = lambda: srv.call("GET", f"/api/v1/conversations/{conv}")[1]["conversation"]["assignee"]
                until(owner_of, "an owner")
                owner = owner_of()
                assert owner in ("ayesha", "bilal"), owner
                ctx["winner"] = owner
                winner, loser = (p1, p2) if owner == "ayesha" else (p2, p1)
                expect(winner.locator(".conv-head .owner")).to_contain_text(owner)
                expect(winner.locator("#reply-text")).to_be_enabled()
                expect(winner.locator("#send")).to_be_visible()
                expect(loser.locator("#composer .why")).to_contain_text(f"{owner} owns this conversation")
                expect(loser.locator("#send")).to_have_count(0)
                expect(loser.locator("#reply-text")).to_be_disabled()
                # The loser cannot send through the API either (the page is only a view of it).
                csrf = loser.locator("meta[name=sy-csrf]").get_attribute("content")
                st = loser.evaluate(
                    """async ([conv, csrf]) => (await fetch(`/api/v1/conversations/${conv}/reply`, {
                        method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                        body: JSON.stringify({text: "a second answer"})})).status""",
                    [conv, csrf],
                )
                assert st == 409 or st == 403, st
                # Without the CSRF token, a change is refused whoever asks.
                st = winner.evaluate(
                    """async (conv) => (await fetch(`/api/v1/conversations/${conv}/notes`, {
                        method: "POST", headers: {"Content-Type": "application/json"},
                        body: JSON.stringify({text: "no csrf"})})).status""",
                    conv,
                )
                assert st == 403, st

            @case("a reply reaches the outbox once; a note never does")
            def _():
                owner = ctx["winner"]
                p = ctx[owner].pages[0]
                p.fill("#reply-text", "Assalam o alaikum, main aap ki madad karti hoon")
                p.click("#send")
                expect(p.locator("#transcript .msg.agent", has_text="main aap ki madad")).to_be_visible()
                p.fill("#reply-text", "SECRET-NOTE customer sounds upset")
                p.click("#add-note")
                note = p.locator("#transcript .msg.note", has_text="SECRET-NOTE")
                expect(note).to_be_visible()
                expect(note).to_contain_text("never sent")
                until(lambda: any("main aap ki madad" in t for t in graph.texts()), "the reply at the Graph API")
                time.sleep(1.0)
                sent = json.dumps(graph.sent)
                assert sent.count("main aap ki madad") == 1, sent
                assert "SECRET-NOTE" not in sent, sent
                p.screenshot(path=str(SHOTS / "desktop.png"), full_page=True)

            @case("a customer's photo shows in the conversation")
            def _():
                picture = png()
                graph.media["7001"] = ("image/png", picture)
                srv.whatsapp("923001110001", "wamid.b2", "", "Hina Baig",
                             media={"id": "7001", "mime_type": "image/png", "caption": "ok, see this"})
                p = ctx[ctx["winner"]].pages[0]
                img = p.locator("#transcript img.media")
                expect(img).to_be_visible(timeout=10000)
                expect(img).to_have_attribute("alt", "ok, see this")
                until(lambda: p.evaluate("(i) => i.complete && i.naturalWidth", img.element_handle()) == 96,
                      "the image to load")
                img.scroll_into_view_if_needed()
                p.screenshot(path=str(SHOTS / "desktop-photo.png"))

            @case("presence shows the second viewer, who types, and when they leave")
            def _():
                owner = ctx["winner"]
                other = "bilal" if owner == "ayesha" else "ayesha"
                conv = srv.conversation_of("923001110001")
                p1, p2 = ctx[owner].pages[0], ctx[other].pages[0]
                p2.goto(f"{srv.base}/inbox")
                expect(p2.locator("#live")).to_have_class("on", timeout=10000)
                p2.evaluate(f"select({conv})")
                expect(p1.locator("#presence")).to_contain_text(f"Also here: {other}", timeout=10000)
                expect(p2.locator("#presence")).to_contain_text(owner)
                p1.type("#reply-text", "let me check")
                expect(p2.locator("#presence")).to_contain_text(f"{owner} (typing…)", timeout=10000)
                p1.fill("#reply-text", "")
                p2.goto("about:blank")
                expect(p1.locator("#presence")).not_to_contain_text(other, timeout=10000)

            @case("a saved reply is inserted with /")
            def _():
                p = ctx[ctx["winner"]].pages[0]
                p.fill("#reply-text", "")
                p.type("#reply-text", "/refund")
                opt = p.locator("#snippets [role=option]")
                expect(opt.first).to_contain_text("/refund_timeline")
                p.press("#reply-text", "Enter")
                expect(p.locator("#reply-text")).to_have_value(
                    "Refunds reach your bank account or wallet within 5 to 7 working days after we receive the parcel.")
                expect(p.locator("#snippets")).to_have_count(0)
                p.fill("#reply-text", "")

            @case("availability and load: an agent goes online from the page")
            def _():
                owner = ctx["winner"]
                p = ctx[owner].pages[0]
                expect(p.locator("#load")).to_contain_text("1 of 5 open")
                p.select_option("#availability", "online")
                until(lambda: next(a for a in srv.call("GET", "/api/v1/agents")[1]["agents"] if a["id"] == owner)["availability"] == "online",
                      "the agent online")
                p.select_option("#availability", "away")
                until(lambda: next(a for a in srv.call("GET", "/api/v1/agents")[1]["agents"] if a["id"] == owner)["availability"] == "away",
                      "the agent away")

            @case("the trace panel names the rule that routed it")
            def _():
                p = ctx[ctx["winner"]].pages[0]
                expect(p.locator("#trace")).to_contain_text("a person, when asked")
                expect(p.locator("#trace")).to_contain_text("support")

            @case("window closed: only approved templates are offered")
            def _():
                srv.shopify_order(20001, "923001110002")
                conv = srv.conversation_of("923001110002")
                c = ctx["sara"] = browser.new_context(viewport={"width": 1280, "height": 800})
                p = c.new_page()
                login(p, srv.base, "sara")
                p.click("[data-tab=all]")
                p.evaluate(f"select({conv})")
                expect(p.locator("#composer .why")).to_contain_text("window is closed")
                expect(p.locator("#template")).to_be_visible()
                expect(p.locator("#reply-text")).to_have_count(0)
                assert p.locator("#template option").count() >= 1

            @case("the customer panel shows their orders from the store and their other conversations")
            def _():
                srv.whatsapp("923001234567", "wamid.c1", "mujhe insaan se baat karni hai", "Ayesha Khan")
                conv = srv.conversation_of("923001234567")
                p = ctx["sara"].pages[0]
                p.evaluate(f"select({conv})")
                orders = p.locator("#customer-more .orders")
                expect(orders).to_contain_text("#10234 — dispatched, COD")
                link = orders.locator("a", has_text="LE7781234")
                expect(link).to_have_attribute("href", "https://www.leopardscourier.com/track/LE7781234")
                expect(p.locator("#customer-more")).to_contain_text("Previous conversations")

            @case("the customer's language is detected, and a person can set it")
            def _():
                conv = srv.conversation_of("923001234567")
                p = ctx["sara"].pages[0]
                p.evaluate(f"select({conv})")
                lang = p.locator("#language")
                # "mujhe insaan se baat karni hai" is Roman Urdu: replies follow it.
                expect(lang).to_have_value("auto")
                expect(lang.locator("option[value=auto]")).to_contain_text("Roman Urdu")
                p.select_option("#language", "ur")
                expect(p.locator("div#status")).to_contain_text("Replies in Urdu")
                contact = lambda: srv.call("GET", f"/api/v1/conversations/{conv}")[1]["contact"]
                until(lambda: contact()["language"] == "ur" and contact()["language_set_by"] == "sara",
                      "the language set by sara")
                expect(p.locator("#language")).to_have_value("ur")
                # A live redraw may replace the select while it is being changed: choose again
                # until the server has it.
                def back_to_auto():
                    if contact()["language_set_by"] is not None:
                        p.select_option("#language", "auto")
                    return contact()["language_set_by"] is None
                until(back_to_auto, "the language detected again")

            @case("an agent opens a ticket from the page and moves it along")
            def _():
                p = ctx[ctx["winner"]].pages[0]
                p.fill("#ticket-title", "Wrong size delivered")
                p.click("#open-ticket")
                expect(p.locator("#customer")).to_contain_text("Wrong size delivered — open")
                p.select_option("#ticket-status", "pending")
                expect(p.locator("#customer")).to_contain_text("Wrong size delivered — pending")
                p.fill("#tag", "size-issue")
                p.click("#add-tag")
                expect(p.locator(".conv-head")).to_contain_text("#size-issue")

            @case("a phone-sized screen: the list, then one conversation and back")
            def _():
                c = ctx["phone"] = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
                p = c.new_page()
                login(p, srv.base, ctx["winner"])
                p.click("[data-tab=mine]")
                line = p.locator("#lines .line", has_text="Hina Baig")
                expect(line).to_be_visible()
                expect(p.locator("#conversation")).to_be_hidden()
                for what in ["#logout", "#availability", "[data-tab=unassigned]"]:
                    b = p.locator(what).bounding_box()
                    assert b and b["x"] >= 0 and b["x"] + b["width"] <= 390, (what, b)
                p.screenshot(path=str(SHOTS / "phone-list.png"))
                line.tap()
                expect(p.locator("#reply-text")).to_be_visible()
                expect(p.locator("#inbox")).to_be_hidden()
                box = p.locator("#reply-text").bounding_box()
                assert box["width"] <= 390 and box["x"] >= 0, box
                p.screenshot(path=str(SHOTS / "phone-conversation.png"))
                p.click(".conv-head .back")
                expect(p.locator("#lines")).to_be_visible()

            @case("no serious or critical accessibility violations (axe-core)")
            def _():
                axe = Path(args.axe)
                assert axe.exists(), f"{axe} is missing: npm install axe-core (see .ci/run)"
                c = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
                ctx["axe"] = c
                p = c.new_page()
                bad = []
                p.goto(f"{srv.base}/login")
                for where in ["login", "inbox", "conversation"]:
                    if where == "inbox":
                        login(p, srv.base, ctx["winner"])
                        p.click("[data-tab=mine]")
                        expect(p.locator("#lines .line").first).to_be_visible()
                    if where == "conversation":
                        p.click("#lines .line:has-text('Hina Baig')")
                        expect(p.locator("#transcript")).to_be_visible()
                        expect(p.locator("#trace h3")).to_be_visible()
                    p.add_script_tag(path=str(axe))
                    r = p.evaluate("axe.run(document, {resultTypes: ['violations']})")
                    for v in r["violations"]:
                        if v["impact"] in ("serious", "critical"):
                            bad.append((where, v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]))
                assert not bad, json.dumps(bad, indent=1)

            browser.close()
    finally:
        srv.stop()
    print(f"{len(failures)} browser checks failed: {failures}" if failures else "all browser checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
