#!/usr/bin/env python3
"""A warren persistent worker (mode = persistent), standard library only.

warren writes one JSON envelope per line on stdin; answer each with one
line on stdout. End of file on stdin means: exit now. Log to stderr.
"""
import json
import sys


def handle(envelope):
    """Your work. Return "ack", "retry" or "dead_letter", and a reason."""
    body = envelope.get("body", "")
    if body == "poison":
        return "dead_letter", "cannot handle a poison message"
    print(f"handling {envelope['properties']['message_id']}: {body}", file=sys.stderr, flush=True)
    return "ack", None


def main():
    # Slow set-up (imports, connections) goes before this line: it is
    # never charged to a message.
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        envelope = json.loads(line)
        try:
            outcome, reason = handle(envelope)
        except Exception as error:  # a bug: let warren retry the message
            outcome, reason = "retry", repr(error)
        answer = {"id": envelope["id"], "outcome": outcome}
        if reason:
            answer["reason"] = reason
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
