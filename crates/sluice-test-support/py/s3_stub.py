"""A tiny S3 over HTTPS that verifies every SigV4 signature with botocore's
own signer, for sluice's re-signing e2e tests (runs in the test's namespace).

usage: s3_stub.py ADDR PORT RECORD CERT KEY KEYS_JSON
KEYS_JSON: {"access_key_id": ..., "secret_access_key": ...}, the REAL keys.

Each request is rebuilt from ONLY the headers its SignedHeaders name (header
form) or X-Amz-SignedHeaders (presigned query form) and signed again with
the real secret by botocore (S3SigV4Auth / S3SigV4QueryAuth, timestamp from
X-Amz-Date); a mismatch, an unknown access key id or a payload hash that is
not the body's is answered 403 SignatureDoesNotMatch. Otherwise:
GET /BUCKET?list-type=2 lists the bucket, PUT /BUCKET/KEY stores an object,
GET /BUCKET/KEY returns it; a POST (another service, e.g. STS, whose body
is hashed into the signature) gets a GetCallerIdentity answer. Every request is appended to RECORD as one JSON
line (method, path, header names, access key id, session token, payload
mode, whether the signature verified).
"""
import hashlib
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ADDR, PORT, RECORD = sys.argv[1], int(sys.argv[2]), sys.argv[3]
CERT, KEY, KEYS = sys.argv[4], sys.argv[5], sys.argv[6]
with open(KEYS) as f:
    REAL = json.load(f)
OBJECTS = {}
LOCK = threading.Lock()


def record(entry):
    with LOCK, open(RECORD, "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_chunked(rfile):
    body = b""
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += rfile.read(size)
        rfile.readline()


def aws_chunked_decode(data):
    """The payload of an aws-chunked body (unsigned chunks, optional trailer)."""
    out, rest = b"", data
    while True:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return out
        out += rest[:size]
        rest = rest[size + 2:]


def parse_authorization(value):
    scheme, _, params = value.partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        return None
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    akid, date, region, service, term = fields["Credential"].split("/")
    return {
        "akid": akid,
        "date": date,
        "region": region,
        "service": service,
        "signed": fields["SignedHeaders"].split(";"),
        "signature": fields["Signature"],
    }


def verify(method, raw_path, headers, body):
    """(verified, access key id, why) for this request."""
    path, _, query = raw_path.partition("?")
    params = parse_qsl(query, keep_blank_values=True)
    qdict = dict(params)
    host = headers.get("host")
    if "X-Amz-Algorithm" in qdict:
        akid, date, region, service, _ = qdict["X-Amz-Credential"].split("/")
        signed = qdict["X-Amz-SignedHeaders"].split(";")
        given = qdict["X-Amz-Signature"]
        timestamp = qdict["X-Amz-Date"]
        unsigned_query = "&".join(
            p for p in query.split("&") if not p.startswith("X-Amz-Signature=")
        )
        url = "https://%s%s?%s" % (host, path, unsigned_query)
        auth_cls = S3SigV4QueryAuth
        token = qdict.get("X-Amz-Security-Token")
    else:
        auth = parse_authorization(headers.get("authorization", ""))
        if auth is None:
            return False, None, "no SigV4 authorization"
        akid, region, service = auth["akid"], auth["region"], auth["service"]
        signed, given = auth["signed"], auth["signature"]
        timestamp = headers.get("x-amz-date", "")
        url = "https://%s%s" % (host, raw_path)
        auth_cls = S3SigV4Auth if service == "s3" else SigV4Auth
        token = headers.get("x-amz-security-token")
        claimed = headers.get("x-amz-content-sha256", "")
        if len(claimed) == 64 and claimed != hashlib.sha256(body).hexdigest():
            return False, akid, "payload hash is not the body's"
    if akid != REAL["access_key_id"]:
        return False, akid, "unknown access key id"
    only_signed = {name: headers[name] for name in signed if name in headers}
    if len(only_signed) != len(signed):
        return False, akid, "a signed header is missing"
    request = AWSRequest(method=method, url=url, headers=only_signed, data=body)
    request.context["timestamp"] = timestamp
    creds = Credentials(REAL["access_key_id"], REAL["secret_access_key"], token)
    if auth_cls is S3SigV4QueryAuth:
        signer = auth_cls(creds, service, region, expires=3600)
    else:
        signer = auth_cls(creds, service, region)
    canonical = signer.canonical_request(request)
    if signer.signed_headers(signer.headers_to_sign(request)) != ";".join(signed):
        return False, akid, "signed header list differs"
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != given:
        return False, akid, "signature mismatch"
    return True, akid, ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            return read_chunked(self.rfile)
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, body, ctype="application/xml"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        body = self.body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        ok, akid, why = verify(self.command, self.path, headers, body)
        path = self.path.partition("?")[0]
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        token = headers.get("x-amz-security-token") or query.get("X-Amz-Security-Token")
        record({
            "method": self.command,
            "path": path,
            "query_keys": sorted(query),
            "headers": sorted(headers),
            "access_key_id": akid,
            "session_token": token,
            "payload": headers.get("x-amz-content-sha256"),
        "host": headers.get("host"),
        "body_length": len(body),
            "verified": ok,
            "why": why,
        })
        if not ok:
            self.reply(403, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SignatureDoesNotMatch</Code><Message>%s</Message></Error>" % why.encode())
            return
        if self.command == "POST":
            xml = (
                '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                "<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/stub</Arn>"
                "<UserId>STUB</UserId><Account>123456789012</Account></GetCallerIdentityResult>"
                "<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
            )
            self.reply(200, xml.encode(), "text/xml")
            return
        parts = path.lstrip("/").split("/", 1)
        bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
        if self.command == "PUT" and key:
            if "aws-chunked" in headers.get("content-encoding", ""):
                body = aws_chunked_decode(body)
            OBJECTS[(bucket, key)] = body
            self.send_response(200)
            self.send_header("ETag", '"%s"' % hashlib.md5(body).hexdigest())
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.command == "GET" and key:
            data = OBJECTS.get((bucket, key))
            if data is None:
                self.reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
            else:
                self.reply(200, data, "application/octet-stream")
        elif self.command == "GET":
            contents = "".join(
                "<Contents><Key>%s</Key><Size>%d</Size></Contents>" % (k, len(v))
                for (b, k), v in sorted(OBJECTS.items()) if b == bucket
            )
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                "<Name>%s</Name><Prefix></Prefix><KeyCount>%d</KeyCount><MaxKeys>1000</MaxKeys>"
                "<IsTruncated>false</IsTruncated>%s</ListBucketResult>"
            ) % (bucket, contents.count("<Contents>"), contents)
            self.reply(200, xml.encode())
        else:
            self.reply(405, b"<Error><Code>MethodNotAllowed</Code></Error>")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server = ThreadingHTTPServer((ADDR, PORT), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
