"""HTTPS content server for the real-clients matrix (runs in the test's namespace).

usage: clients_server.py ADDR PORT RECORD CERT KEY ROOT

On start it builds, under ROOT, what the clients fetch: a PEP 503 index with one
wheel (/simple/demo-pkg/), an npm registry with one package (/npm/demo-npm), a
git repository served over dumb HTTP (/git/demo.git) and a text file
(/files/hello.txt). It serves:
  GET  /files/..., /simple/..., /git/...   static files under ROOT
  GET  /npm/demo-npm                        the packument (tarball URLs on this host)
  GET  /sse                                 text/event-stream, chunked: one event, 1.5 s pause, a second event
  POST /upload                              answers {"length": N, "sha256": HEX} of the body
Every request is appended to RECORD as one JSON line (method, path, headers).
"""
import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDR, PORT, RECORD, CERT, KEY, ROOT = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
HOST = "clients.test:%d" % PORT
LOCK = threading.Lock()


def write(path, data):
    full = os.path.join(ROOT, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    return full


def build_wheel():
    name = "demo_pkg-1.0-py3-none-any.whl"
    files = {
        "demo_pkg/__init__.py": b"MESSAGE = 'demo-pkg installed through sluice'\n",
        "demo_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
        "demo_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: sluice-e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
    record.append("demo_pkg-1.0.dist-info/RECORD,,")
    files["demo_pkg-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    wheel = buf.getvalue()
    write("simple/demo-pkg/" + name, wheel)
    sha = hashlib.sha256(wheel).hexdigest()
    write("simple/demo-pkg/index.html",
          ('<html><body><a href="%s#sha256=%s">%s</a></body></html>' % (name, sha, name)).encode())
    write("simple/index.html", b'<html><body><a href="demo-pkg/">demo-pkg</a></body></html>')


def build_npm():
    pkg = json.dumps({"name": "demo-npm", "version": "1.0.0", "main": "index.js"}).encode()
    index = b"module.exports = 'demo-npm installed through sluice';\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for path, data in (("package/package.json", pkg), ("package/index.js", index)):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    tgz = buf.getvalue()
    write("npm/demo-npm/-/demo-npm-1.0.0.tgz", tgz)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    packument = {
        "name": "demo-npm",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {
            "name": "demo-npm", "version": "1.0.0", "main": "index.js",
            "dist": {"tarball": "https://%s/npm/demo-npm/-/demo-npm-1.0.0.tgz" % HOST,
                     "shasum": hashlib.sha1(tgz).hexdigest(), "integrity": integrity},
        }},
    }
    write("npm/demo-npm/packument.json", json.dumps(packument).encode())


def build_git():
    work = os.path.join(ROOT, "git-work")
    bare = os.path.join(ROOT, "git", "demo.git")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", HOME=ROOT)
    run = lambda *a, cwd=None: subprocess.run(a, cwd=cwd, env=env, check=True, capture_output=True)
    os.makedirs(work, exist_ok=True)
    run("git", "init", "-q", "-b", "main", work)
    with open(os.path.join(work, "README"), "w") as f:
        f.write("demo repository served through sluice\n")
    run("git", "add", "README", cwd=work)
    run("git", "commit", "-q", "-m", "first", cwd=work)
    run("git", "clone", "-q", "--bare", work, bare)
    run("git", "update-server-info", cwd=bare)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self):
        with LOCK, open(RECORD, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path,
                                "headers": [[k, v] for k, v in self.headers.items()]}) + "\n")

    def send(self, status, body, ctype="application/octet-stream"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self.record()
        path = self.path.split("?", 1)[0]
        if path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, event in enumerate((b"data: first\n\n", b"data: second\n\n")):
                if i:
                    time.sleep(1.5)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/npm/demo-npm":
            path = "/npm/demo-npm/packument.json"
            ctype = "application/json"
        else:
            ctype = "text/html" if path.endswith("/") or path.endswith(".html") else "application/octet-stream"
        if path.endswith("/"):
            path += "index.html"
        full = os.path.realpath(os.path.join(ROOT, path.lstrip("/")))
        if not full.startswith(os.path.realpath(ROOT) + os.sep) or not os.path.isfile(full):
            return self.send(404, b"not found\n", "text/plain")
        with open(full, "rb") as f:
            self.send(200, f.read(), ctype)

    do_HEAD = do_GET

    def do_POST(self):
        self.record()
        sha, n = hashlib.sha256(), 0
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            sha.update(chunk)
            n += len(chunk)
            left -= len(chunk)
        self.send(200, json.dumps({"length": n, "sha256": sha.hexdigest()}).encode(), "application/json")


build_wheel()
build_npm()
build_git()
write("files/hello.txt", b"hello through sluice\n")
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.allow_reuse_address = True
server = ThreadingHTTPServer((ADDR, PORT), Handler)
import ssl  # noqa: E402

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
