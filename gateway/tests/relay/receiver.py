"""A real SMTP receiver (aiosmtpd) playing the outbound relay in kvgate's tests.

Usage: python3 receiver.py PORT OUTDIR [HOLD_SECONDS]

Every message it accepts is written to OUTDIR as N.eml (the bytes as received),
together with N.json: the envelope, and what Python's `email` package makes of the
report inside (so the tests check the report parts with an independent parser).
It prints "listening on PORT" once it accepts connections. With HOLD_SECONDS, it
first writes N.receiving and waits that long before answering the final dot, so a
test can kill the sender in the middle of a transaction.
"""

import asyncio
import email
import email.policy
import json
import os
import sys

from aiosmtpd.controller import Controller


def report_summary(raw: bytes) -> dict:
    """The structure of a (signed) multipart/report, as the `email` package sees it."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    summary = {
        "content_type": message.get_content_type(),
        "auto_submitted": message.get("Auto-Submitted"),
        "defects": [type(d).__name__ for d in message.defects],
    }
    report = message
    if message.get_content_type() == "multipart/signed":
        summary["protocol"] = message.get_param("protocol")
        summary["micalg"] = message.get_param("micalg")
        parts = message.get_payload()
        summary["signed_parts"] = [p.get_content_type() for p in parts]
        report = parts[0]
    summary["report_type"] = report.get_param("report-type")
    summary["report_parts"] = [p.get_content_type() for p in report.get_payload()]
    for part in report.get_payload():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            # The email package parses the status into blocks of fields.
            blocks = [dict(block.items()) for block in part.get_payload()]
            summary["per_message"] = blocks[0]
            summary["per_recipient"] = blocks[1:]
        elif kind == "message/disposition-notification":
            body = part.get_payload()
            if isinstance(body, list):
                fields = dict(body[0].items())
            else:
                fields = dict(email.message_from_string(body).items())
            summary["disposition"] = fields
    return summary


class Recorder:
    def __init__(self, outdir: str, hold: float):
        self.outdir = outdir
        self.hold = hold
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.outdir, str(self.count))
        raw = envelope.original_content or envelope.content
        if self.hold:
            open(base + ".receiving", "w").close()
            await asyncio.sleep(self.hold)
        with open(base + ".eml", "wb") as f:
            f.write(raw)
        try:
            summary = report_summary(raw)
        except Exception as e:  # a malformed report is a finding, not a crash
            summary = {"error": repr(e)}
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "report": summary,
        }
        with open(base + ".json.tmp", "w") as f:
            json.dump(record, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 stored as " + str(self.count)


def main() -> None:
    port, outdir = int(sys.argv[1]), sys.argv[2]
    hold = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    os.makedirs(outdir, exist_ok=True)
    start = len([n for n in os.listdir(outdir) if n.endswith(".json")])
    recorder = Recorder(outdir, hold)
    recorder.count = start
    controller = Controller(recorder, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    print(f"listening on {port}", flush=True)
    try:
        asyncio.new_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
