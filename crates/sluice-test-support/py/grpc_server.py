"""Test gRPC upstream for sluice e2e tests (grpcio, HTTP/2 over TLS).

Methods take and return raw bytes (no generated code):
  /helloworld.Greeter/SayHello      unary: b"hello " + request
  /helloworld.Greeter/ListFeatures  server streaming: 5 messages
  /helloworld.Greeter/Chat          bidi streaming: echoes each message
  /admin.Users/Delete               unary (tests prove it is never reached)
Every call is appended to the record file as one JSON line with its method
and invocation metadata, so tests can prove what reached the upstream.

Called as: grpc_server.py ADDR PORT RECORD CERT KEY
"""
import json
import sys
import threading
from concurrent import futures

import grpc

ADDR, PORT, RECORD, CERT, KEY = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
LOCK = threading.Lock()


def record(method, context, request=b""):
    seen = {
        "method": method,
        "metadata": [[k, v if isinstance(v, str) else v.hex()] for k, v in context.invocation_metadata()],
        "request": request.decode("utf-8", "replace"),
    }
    with LOCK, open(RECORD, "a") as f:
        f.write(json.dumps(seen) + "\n")


def say_hello(request, context):
    record("helloworld.Greeter/SayHello", context, request)
    return b"hello " + request


def list_features(request, context):
    record("helloworld.Greeter/ListFeatures", context, request)
    for i in range(5):
        yield b"feature-%d" % i


def chat(requests, context):
    record("helloworld.Greeter/Chat", context)
    for r in requests:
        yield b"echo " + r


def delete(request, context):
    record("admin.Users/Delete", context, request)
    return b"deleted"


ident = lambda b: b
handlers = {
    "helloworld.Greeter": {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello, ident, ident),
        "ListFeatures": grpc.unary_stream_rpc_method_handler(list_features, ident, ident),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, ident, ident),
    },
    "admin.Users": {
        "Delete": grpc.unary_unary_rpc_method_handler(delete, ident, ident),
    },
}

server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
for service, methods in handlers.items():
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
with open(CERT, "rb") as c, open(KEY, "rb") as k:
    creds = grpc.ssl_server_credentials([(k.read(), c.read())])
server.add_secure_port(f"{ADDR}:{PORT}", creds)
server.start()
print("ready", flush=True)
server.wait_for_termination()
