"""An OpenAI- and Anthropic-compatible model backend over HTTPS, for the
inference.local tests (runs in the test's namespace).

usage: llm_server.py ADDR PORT RECORD CERT KEY

Routes (any path prefix before /v1 is allowed and recorded, so one server can
stand behind several routes):
  POST .../v1/chat/completions   JSON, or SSE when "stream": true: a first chunk,
                                 a pause of 0.8 s, a second chunk, a usage chunk
                                 (when stream_options.include_usage), [DONE]
  POST .../v1/completions        the same shape as chat, text completions
  POST .../v1/responses          JSON with usage.input_tokens/output_tokens
  POST .../v1/embeddings         JSON with one vector and usage
  GET  .../v1/models[/ID]        a model list / one model
  POST .../v1/messages           Anthropic: JSON, or the SSE event sequence
                                 (message_start ... message_stop) with a 0.8 s pause
  any path under /stall/         streams one chunk, then waits 5 s (the proxy's
                                 idle bound must trip first)
Every request is appended to RECORD as one JSON line: method, path, headers
(lower-case names), body (parsed JSON or null) and, for streams, the wall time
each chunk was sent ("sent": [t0, t1, ...]) once the stream ends.
"""
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDR, PORT, RECORD, CERT, KEY = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
LOCK = threading.Lock()
PAUSE = 0.8


def record(entry):
    with LOCK, open(RECORD, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def entry(self, body):
        return {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }

    def read_json(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return {"_raw": raw.decode("utf-8", "replace")}

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-backend", "llm-test")
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        self.end_headers()

    def chunk(self, text, sent):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()
        sent.append(time.time())

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self):
        entry = self.entry(None)
        record(entry)
        path = self.path.split("?")[0]
        if "/v1/models/" in path:
            mid = path.rsplit("/", 1)[1]
            return self.send_json(200, {"id": mid, "object": "model", "created": 1, "owned_by": "test"})
        if path.endswith("/v1/models") or path.endswith("/models"):
            return self.send_json(200, {"object": "list", "data": [
                {"id": "served-model", "object": "model", "created": 1, "owned_by": "test"}]})
        self.send_json(404, {"error": {"message": "no such route", "type": "not_found"}})

    def do_POST(self):
        body = self.read_json() or {}
        entry = self.entry(body)
        path = self.path.split("?")[0]
        model = body.get("model", "none") if isinstance(body, dict) else "none"
        stream = isinstance(body, dict) and body.get("stream") is True
        if path.startswith("/stall/"):
            record(entry)
            self.start_stream()
            sent = []
            self.chunk('data: {"choices":[{"text":"a","index":0}]}\n\n', sent)
            time.sleep(5)
            try:
                self.chunk("data: [DONE]\n\n", sent)
                self.end_stream()
            except OSError:
                pass
            return
        if path.endswith("/v1/messages"):
            return self.anthropic(entry, model, stream)
        if path.endswith("/chat/completions") or path.endswith("/completions"):
            return self.openai(entry, model, stream, chat=path.endswith("/chat/completions"))
        if path.endswith("/responses"):
            record(entry)
            return self.send_json(200, {
                "id": "resp_1", "object": "response", "created_at": 1, "model": model,
                "status": "completed",
                "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                            "content": [{"type": "output_text", "text": "pong", "annotations": []}]}],
                "usage": {"input_tokens": 8, "output_tokens": 5, "total_tokens": 13,
                          "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 0}},
            })
        if path.endswith("/embeddings"):
            record(entry)
            return self.send_json(200, {
                "object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]}],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            })
        record(entry)
        self.send_json(404, {"error": {"message": "no such route", "type": "not_found"}})

    def openai(self, entry, model, stream, chat):
        def choice(text, finish=None):
            if chat:
                return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish}
        obj = "chat.completion.chunk" if chat else "text_completion"
        if not stream:
            record(entry)
            c = ({"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}
                 if chat else {"index": 0, "text": "pong", "finish_reason": "stop"})
            return self.send_json(200, {
                "id": "cmpl-1", "object": "chat.completion" if chat else "text_completion", "created": 1,
                "model": model, "choices": [c],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
            })
        self.start_stream()
        sent = []
        base = {"id": "cmpl-1", "object": obj, "created": 1, "model": model}
        self.chunk("data: %s\n\n" % json.dumps(dict(base, choices=[choice("po")])), sent)
        time.sleep(PAUSE)
        self.chunk("data: %s\n\n" % json.dumps(dict(base, choices=[choice("ng", "stop")])), sent)
        if (entry["body"].get("stream_options") or {}).get("include_usage"):
            self.chunk("data: %s\n\n" % json.dumps(dict(base, choices=[], usage={
                "prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13})), sent)
        self.chunk("data: [DONE]\n\n", sent)
        self.end_stream()
        entry["sent"] = sent
        record(entry)

    def anthropic(self, entry, model, stream):
        if not stream:
            record(entry)
            return self.send_json(200, {
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "pong"}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 12, "output_tokens": 6},
            })
        self.start_stream()
        sent = []

        def ev(name, data):
            self.chunk("event: %s\ndata: %s\n\n" % (name, json.dumps(data)), sent)
        ev("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 21, "output_tokens": 1}}})
        ev("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}})
        ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": "po"}})
        time.sleep(PAUSE)
        ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": "ng"}})
        ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": 9}})
        ev("message_stop", {"type": "message_stop"})
        self.end_stream()
        entry["sent"] = sent
        record(entry)


class Server(ThreadingHTTPServer):
    daemon_threads = True


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server = Server((ADDR, PORT), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
