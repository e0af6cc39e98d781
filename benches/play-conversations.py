#!/usr/bin/env python3
"""Plays whole customer conversations through `switchyard serve` and judges how each ended.

    python3 benches/play-conversations.py --binary target/release/switchyard \
        [--pack examples/pk-ecommerce] [--conversations examples/pk-ecommerce/eval/conversations.json] \
        [--verbose] [--only NAME-SUBSTRING]

Each conversation (see the JSON file's shape in benches/README.md) is played by its own
customer (a WhatsApp number of its own) over HTTP: a cash-on-delivery order is announced
through the Shopify webhook route (`start: cod_order`), then the customer's turns are posted to
the WhatsApp webhook route — typed text, a tapped quick-reply button (`tap`), or a button's
title typed (`tap_title`) — waiting after each until it is decided. The server runs a copy of
the pack whose static store holds the conversations' orders (the asking phone is the order's
when `phone_matches`), on a fresh SQLite file, with unsigned webhooks (loopback only).

Afterwards the conversation's decision traces, tickets and queue say what happened:
the store actions the bot took (confirm_order, cancel_order), tickets by category, hand-offs to
a person, the order status shown. The outcome is compared with `expect.outcome`, and every
`expect.must_not` is checked. Prints per-conversation lines for failures and three figures:
ended as expected, finished by the bot alone (of those it could), harmful actions.
"""

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ADMIN = "play-conversations-admin-token-0123456789abcdef"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(method, url, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except Exception:
            return e.code, raw.decode(errors="replace")


def wa_message(wa_id, mid, turn):
    if "tap" in turn:
        msg = {"type": "button", "button": {"payload": turn["tap"], "text": turn["tap"].title()}}
    else:
        text = turn.get("customer", turn.get("tap_title", ""))
        msg = {"type": "text", "text": {"body": text}}
    msg.update({"from": wa_id, "id": mid, "timestamp": str(int(time.time()))})
    return {
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "1",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "923000000000", "phone_number_id": "1"},
                    "contacts": [{"profile": {"name": "Customer"}, "wa_id": wa_id}],
                    "messages": [msg],
                },
            }],
        }],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/switchyard")
    ap.add_argument("--pack", default="examples/pk-ecommerce")
    ap.add_argument("--conversations", default="examples/pk-ecommerce/eval/conversations.json")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--only", default=None)
    args = ap.parse_args()

    convs = json.load(open(args.conversations, encoding="utf-8"))
    if args.only:
        convs = [c for c in convs if args.only in c["name"]]
    tmp = tempfile.mkdtemp(prefix="play-")
    pack = os.path.join(tmp, "pack")
    shutil.copytree(args.pack, pack, ignore=shutil.ignore_patterns("tests", "eval"))
    orders = []
    customers = []
    for i, c in enumerate(convs):
        wa_id = f"92301{i:07d}"
        customers.append(wa_id)
        o = c.get("order")
        if o:
            # The order number the conversation writes; one used before gets a number of its
            # own (and the turns say it), so lookups never cross.
            c["_order"] = o["name"]
            if o["name"] in {x["name"] for x in orders}:
                c["_order"] = f"#{40000 + i}"
                c["_renumbered"] = (o["name"].lstrip("#"), c["_order"].lstrip("#"))
            orders.append({
                "name": c["_order"],
                "phone": f"+{wa_id}" if o.get("phone_matches", True) else "+923459999999",
                "customer_name": "Customer",
                "status": o.get("status") or "pending",
                "payment": "cod",
                "total": 4250,
                "currency": "PKR",
                "tracking_url": o.get("tracking_url"),
                "courier": "TCS" if o.get("tracking_url") else None,
                "created_at": "2026-12-01T10:00:00+05:00",
            })
    with open(os.path.join(pack, "demo-orders.json"), "w", encoding="utf-8") as f:
        json.dump([{k: v for k, v in o.items() if v is not None} for o in orders], f)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, SWITCHYARD_ADMIN_TOKEN=ADMIN, RUST_LOG="warn")
    for k in ["SHOPIFY_SHOP", "SHOPIFY_ACCESS_TOKEN", "SHOPIFY_WEBHOOK_SECRET", "WHATSAPP_APP_SECRET",
              "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID", "SWITCHYARD_LLM_URL"]:
        env.pop(k, None)
    log = open(os.path.join(tmp, "serve.log"), "w")
    srv = subprocess.Popen(
        [args.binary, "serve", "--rules", pack, "--db", f"sqlite://{tmp}/play.db",
         "--listen", f"127.0.0.1:{port}", "--insecure-unsigned-webhooks", "--api-rate", "0"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    auth = {"authorization": f"Bearer {ADMIN}"}
    try:
        for _ in range(200):
            try:
                if http("GET", base + "/readyz")[0] == 200:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        else:
            sys.exit("serve did not start: see " + log.name)

        results = []
        for i, c in enumerate(convs):
            results.append(play(base, auth, i, c, customers[i], args.verbose))
    finally:
        srv.terminate()
        srv.wait()

    total = len(results)
    ok = sum(1 for r in results if r["ok"])
    can = [r for r in results if r["can_finish"]]
    alone = sum(1 for r in can if r["ok"] and not r["handed"])
    harm = [r for r in results if r["harm"]]
    for r in results:
        if not r["ok"] or r["harm"] or (r["can_finish"] and r["handed"]):
            print(f"- {r['name']} [{r['language']}]: expected {r['expected']}, got {r['got']}"
                  + (f"; HARM: {', '.join(r['harm'])}" if r["harm"] else "")
                  + (" (handed to a person)" if r["handed"] and r["can_finish"] else ""))
            for line in r["log"]:
                print("    " + line)
    print(f"\nended as expected: {ok}/{total} = {ok / total:.3f}")
    if can:
        print(f"finished by the bot alone, of those it could: {alone}/{len(can)} = {alone / len(can):.3f}")
    print(f"harmful actions: {len(harm)}")
    shutil.rmtree(tmp, ignore_errors=True)


def play(base, auth, i, c, wa_id, verbose):
    logl = []
    seen = 0
    if c.get("start") == "cod_order":
        o = c["_order"]
        body = {
            "id": 9000000 + i, "name": o, "phone": f"+{wa_id}",
            "total_price": "4250.00", "currency": "PKR",
            "payment_gateway_names": ["Cash on Delivery (COD)"], "financial_status": "pending",
            "fulfillment_status": None, "cancelled_at": None,
            "customer": {"first_name": "Customer", "last_name": "", "phone": f"+{wa_id}"},
        }
        st, _ = http("POST", base + "/webhooks/shopify", body,
                     {"x-shopify-topic": "orders/create", "x-shopify-webhook-id": f"play-{i}"})
        logl.append(f"store: COD order {o} ({st})")
    conv_id = None
    for k, turn in enumerate(c["turns"]):
        if "customer" in turn and c.get("_renumbered"):
            was, now = c["_renumbered"]
            urdu = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
            text = turn["customer"].replace(was, now).replace(was.translate(urdu), now.translate(urdu))
            turn = dict(turn, customer=text)
        payload = wa_message(wa_id, f"wamid.play{i}.{k}", turn)
        st, _ = http("POST", base + "/webhooks/whatsapp", payload)
        logl.append(f"customer: {json.dumps(turn, ensure_ascii=False)} ({st})")
        conv_id, seen = wait_decided(base, auth, wa_id, conv_id, seen)
    conv_id, seen = wait_decided(base, auth, wa_id, conv_id, seen)
    _, detail = http("GET", f"{base}/api/v1/conversations/{conv_id}", headers=auth)
    _, traces = http("GET", f"{base}/api/v1/conversations/{conv_id}/trace", headers=auth)
    steps = [s for t in traces.get("decisions", []) for s in t["trace"].get("steps", [])]
    intents = [t["trace"].get("intent") for t in traces.get("decisions", [])]
    # The trace names actions as the engine does (`ConfirmOrder`); the pack as `confirm_order`.
    snake = lambda a: "".join("_" + ch.lower() if ch.isupper() else ch for ch in a).lstrip("_")
    actions = [snake(s["action"]) for s in steps if s.get("kind") == "lookup" and s.get("found", 0) > 0
               and not s.get("failed") and snake(s.get("action", "")) in ("confirm_order", "cancel_order")]
    tickets = [t.get("category") for t in detail.get("tickets", [])]
    conv = detail.get("conversation", {})
    handed = any(s.get("kind") in ("handed_off", "unhandled", "routed", "waiting") for s in steps)
    outs = [m for m in detail.get("messages", []) if m.get("direction") == "out"]
    replies = [m.get("body", "") for m in outs]
    if True:
        for t in intents:
            if t:
                logl.append(f"  intent {t.get('intent')} {t.get('confidence')} {t.get('scores')}")
        for r in replies:
            logl.append(f"  bot: {r[:140]}")
        logl.append(f"  actions {actions} tickets {tickets} queue {conv.get('queue')} handed {handed}")
    order = c.get("_order")
    status_shown = bool(order) and any(order in r for r in replies) and not handed
    got = set()
    if "confirm_order" in actions:
        got.add("cod_confirmed")
    if "cancel_order" in actions:
        got.add("cod_cancelled")
    if c.get("start") == "cod_order" and not actions:
        got.add("cod_undecided")
    if "complaint" in tickets:
        got.add("ticket_complaint")
    if "return" in tickets:
        got.add("ticket_return")
    if "payment" in tickets:
        got.add("ticket_payment")
    if handed:
        got.add("handoff")
    if status_shown:
        got.add("status_answered")
    if not handed and replies:
        got.add("closed_politely")
    exp = c["expect"]
    want = exp["outcome"]
    ok = want in got
    if want == "cod_undecided":
        ok = not actions
    harm = []
    for m in exp.get("must_not", []):
        if m in ("confirm_order", "cancel_order") and m in actions:
            harm.append(m)
        if m == "complaint_ticket" and "complaint" in tickets:
            harm.append(m)
        if m == "handoff" and handed:
            ok = False
    # An order confirmed or cancelled that the customer did not decide is harm, always.
    if "confirm_order" in actions and want != "cod_confirmed":
        harm.append("confirm_order")
    if "cancel_order" in actions and want != "cod_cancelled":
        harm.append("cancel_order")
    if harm:
        ok = False
    return {
        "name": c["name"], "language": c.get("language"), "ok": ok, "expected": want,
        "got": sorted(got), "harm": sorted(set(harm)), "handed": handed,
        "can_finish": exp.get("bot_can_finish", False), "log": logl,
    }


def wait_decided(base, auth, wa_id, conv_id, seen):
    """Waits until the conversation's decisions stop growing (every posted event decided)."""
    deadline = time.time() + 10
    last_change = time.time()
    while time.time() < deadline:
        if conv_id is None:
            _, lst = http("GET", f"{base}/api/v1/conversations?q={wa_id}", headers=auth)
            items = (lst or {}).get("conversations", []) if isinstance(lst, dict) else []
            if items:
                conv_id = items[0]["id"]
        if conv_id is not None:
            _, tr = http("GET", f"{base}/api/v1/conversations/{conv_id}/trace", headers=auth)
            n = len(tr.get("decisions", [])) if isinstance(tr, dict) else 0
            if n != seen:
                seen = n
                last_change = time.time()
            elif time.time() - last_change > 0.25:
                return conv_id, seen
        time.sleep(0.05)
    return conv_id, seen


if __name__ == "__main__":
    main()
