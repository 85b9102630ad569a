"""Bulk-transfer upstream for sluice e2e tests (HTTP/1.1 keep-alive, HTTPS
when CERT KEY are given).

POST/PUT: the body (Content-Length or chunked) is read in pieces and hashed
as it arrives; the answer is JSON {"bytes": N, "sha256": HEX, "expect":
the Expect header or null}, so a test can prove the upstream received
every byte, in order.
  path containing "late": the body is read only 0.3 s after the head, so
    the proxy's upstream socket fills while the body is still arriving.

GET /download/N: N bytes of the counter pattern (block i of 8 bytes is i as
a little-endian u64, truncated to N), with X-Sha256 over those bytes.
"""
import array
import hashlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDR, PORT = sys.argv[1], int(sys.argv[2])
# argv[3] is the record path every harness server takes; unused here.
TLS = sys.argv[4:6] if len(sys.argv) >= 6 else None
PIECE = 64 * 1024


def pattern(n):
    """The counter pattern in pieces of at most PIECE bytes."""
    for start in range(0, n, PIECE):
        first = start // 8
        blocks = array.array("Q", range(first, first + PIECE // 8))
        if sys.byteorder == "big":
            blocks.byteswap()
        yield blocks.tobytes()[: min(PIECE, n - start)]


class Bulk(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_some(self, want, digest):
        got = 0
        while got < want:
            data = self.rfile.read(min(PIECE, want - got))
            if not data:
                raise ConnectionError("body truncated")
            digest.update(data)
            got += len(data)
        return got

    def do_upload(self):
        if "late" in self.path:
            time.sleep(0.3)
        digest = hashlib.sha256()
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += self.read_some(size, digest)
                self.rfile.readline()
        else:
            total = self.read_some(int(self.headers.get("Content-Length") or 0), digest)
        seen = {"bytes": total, "sha256": digest.hexdigest(), "expect": self.headers.get("Expect")}
        out = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        try:
            n = int(self.path.rsplit("/", 1)[1])
        except ValueError:
            self.send_error(404)
            return
        digest = hashlib.sha256()
        for piece in pattern(n):
            digest.update(piece)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("X-Sha256", digest.hexdigest())
        self.end_headers()
        for piece in pattern(n):
            self.wfile.write(piece)

    do_POST = do_PUT = do_upload


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.allow_reuse_address = True
server = ThreadingHTTPServer((ADDR, PORT), Bulk)
if TLS:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(TLS[0], TLS[1])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
