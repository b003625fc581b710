#!/usr/bin/env python3
"""The publisher's static repository over HTTP for the VM guests.

python3 -m http.server, plus an optional rate limit (--rate BYTES_PER_SECOND) for files
larger than a MiB: the power-cut scenario throttles the release image so staging lasts
long enough for its cuts to land inside it on any host (on a fast host an unthrottled
52 MiB image stages in under a second, between two of the guest's progress markers).
Prints "Serving HTTP on ... port N" first, as http.server does.
"""
import argparse
import functools
import http.server
import shutil
import sys
import time

BIG = 1 << 20
CHUNK = 64 << 10


class Handler(http.server.SimpleHTTPRequestHandler):
    rate = 0

    def copyfile(self, source, outputfile):
        if not self.rate:
            shutil.copyfileobj(source, outputfile)
            return
        start = time.monotonic()
        sent = 0
        while True:
            buf = source.read(CHUNK)
            if not buf:
                return
            outputfile.write(buf)
            sent += len(buf)
            if sent > BIG:
                ahead = sent / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--directory", required=True)
    ap.add_argument("--rate", type=int, default=0, help="bytes per second past the first MiB (0: unlimited)")
    args = ap.parse_args()
    Handler.rate = args.rate
    handler = functools.partial(Handler, directory=args.directory)
    with http.server.ThreadingHTTPServer((args.bind, 0), handler) as srv:
        port = srv.server_address[1]
        rate = f", {args.rate} B/s past the first MiB" if args.rate else ""
        print(f"Serving HTTP on {args.bind} port {port} (http://{args.bind}:{port}/){rate} ...", flush=True)
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
