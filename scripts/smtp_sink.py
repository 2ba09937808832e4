#!/usr/bin/python3
"""A real SMTP server for tests: accepts mail and writes each message to a folder.

    smtp_sink.py --host 127.0.0.1 --port 0 --dir D [--refuse ADDR ...] [--defer ADDR ...]

Each accepted message becomes D/<n>.eml (n = 1, 2, ...; continuing after the highest number
already in D), written under a temporary name and renamed, so a reader never sees half a
message. The file holds the raw message as received, with the envelope recipients prepended
in one `X-Envelope-To: a@x, b@y` header.

RCPT TO for an address given with --refuse (case-insensitive, repeatable) is answered
`550 5.1.1 mailbox unavailable`; the other recipients of the same message are still accepted.
RCPT TO for an address given with --defer is answered `451 4.2.0 mailbox busy; try again
later`, a temporary refusal.

Once listening, prints `LISTENING <port>` on stdout (the bound port, useful with --port 0)
and flushes. SIGTERM or SIGINT stops it cleanly with exit status 0.

Needs aiosmtpd, which Debian packages for its own /usr/bin/python3 (python3-aiosmtpd): when
started by another interpreter that lacks it, the script re-executes itself with that one.
"""

import argparse
import asyncio
import os
import re
import signal
import sys

try:
    from aiosmtpd.smtp import SMTP
except ImportError:
    SYSTEM_PYTHON = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON) and os.access(
        SYSTEM_PYTHON, os.X_OK
    ):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit("smtp_sink: aiosmtpd is missing; install python3-aiosmtpd")

REFUSED_REPLY = "550 5.1.1 mailbox unavailable"
DEFERRED_REPLY = "451 4.2.0 mailbox busy; try again later"
MESSAGE_NAME = re.compile(r"^(\d+)\.eml$")


class FolderHandler:
    """aiosmtpd handler: refuses listed recipients and stores each message as a file."""

    def __init__(self, folder, refused, deferred):
        self.folder = folder
        self.refused = {address.lower() for address in refused}
        self.deferred = {address.lower() for address in deferred}
        self.last_number = max(
            (int(m.group(1)) for m in map(MESSAGE_NAME.match, os.listdir(folder)) if m),
            default=0,
        )

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.refused:
            return REFUSED_REPLY
        if address.lower() in self.deferred:
            return DEFERRED_REPLY
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        header = "X-Envelope-To: " + ", ".join(envelope.rcpt_tos) + "\r\n"
        self.last_number += 1
        number = self.last_number
        final_path = os.path.join(self.folder, f"{number}.eml")
        temp_path = os.path.join(self.folder, f".{number}.eml.tmp")
        with open(temp_path, "wb") as file:
            file.write(header.encode("utf-8"))
            file.write(envelope.original_content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, final_path)
        return "250 2.0.0 OK: queued as " + str(number)


def parse_args():
    parser = argparse.ArgumentParser(description="SMTP server that stores mail as .eml files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--dir", required=True, help="folder for the .eml files")
    parser.add_argument(
        "--refuse", action="append", default=[], metavar="ADDR", help="answer 550 to RCPT TO ADDR"
    )
    parser.add_argument(
        "--defer", action="append", default=[], metavar="ADDR", help="answer 451 to RCPT TO ADDR"
    )
    return parser.parse_args()


async def serve(args):
    os.makedirs(args.dir, exist_ok=True)
    handler = FolderHandler(args.dir, args.refuse, args.defer)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp-sink", enable_SMTPUTF8=True, loop=loop),
        host=args.host,
        port=args.port,
    )

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)

    await stop.wait()
    server.close()
    # Newer Pythons also wait here for open client connections (a pooled SMTP client may
    # hold one); do not let such a client keep the sink alive.
    try:
        await asyncio.wait_for(server.wait_closed(), timeout=2)
    except asyncio.TimeoutError:
        pass


def main():
    asyncio.run(serve(parse_args()))


if __name__ == "__main__":
    main()
