#!/usr/bin/env python3
"""Recorded events for the replay benchmark (`switchyard diff`): N customer messages over
C conversations, in the three ways customers write, one JSON line each (`switchyard export`'s
format). Deterministic: the same arguments give the same file.

    python3 benches/replay-events.py 100000 10000 > /tmp/events.jsonl
    switchyard diff examples/pk-ecommerce examples/pk-ecommerce --events /tmp/events.jsonl
"""
import json
import random
import sys

TEXTS = [
    "mera order kahan hai #10234",
    "where is my parcel",
    "parcel toota hua aaya hai",
    "the shirt is torn, very bad quality",
    "size chota hai, exchange karna hai",
    "mera address change kar dein please",
    "paise kat gaye Rs 2,499 lekin order nahi hua",
    "talk to a human please",
    "assalam o alaikum",
    "do you have this in maroon colour",
    "order cancel kar dein",
    "میرا پارسل کب آئے گا",
    "ok thanks",
    "10234",
]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    convs = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    rnd = random.Random(7)
    at = 1_795_420_000_000  # a Monday, 12:00 in Karachi
    out = sys.stdout
    for i in range(n):
        c = rnd.randrange(convs)
        phone = f"92300{c:07d}"
        ev = {"type": "message", "channel": "whatsapp", "from": phone, "name": None,
              "phone": f"+{phone}", "provider_id": f"wamid.r{i}", "kind": "text",
              "text": rnd.choice(TEXTS), "choice": None, "payload": None}
        out.write(json.dumps({"at": at + i * 50, "event": ev}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
