"""Raw client for sluice e2e tests: CONNECT through the proxy, optionally
TLS inside the tunnel (trusting CAFILE), write stdin's bytes in one go, and
print everything read until the proxy closes or 3 s pass without data.

usage: tunnel_client.py PROXY_HOST PROXY_PORT TARGET_HOST TARGET_PORT [CAFILE]
Exit 3 if the CONNECT itself was refused (its response is printed).
"""
import socket
import ssl
import sys

proxy_host, proxy_port, host, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cafile = sys.argv[5] if len(sys.argv) > 5 else None
payload = sys.stdin.buffer.read()

s = socket.create_connection((proxy_host, proxy_port), timeout=10)
s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        break
    head += chunk
if not head.startswith(b"HTTP/1.1 200"):
    sys.stdout.buffer.write(head + s.recv(65536))
    sys.exit(3)
if cafile:
    ctx = ssl.create_default_context(cafile=cafile)
    s = ctx.wrap_socket(s, server_hostname=host)
s.settimeout(3)
s.sendall(payload)
out = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
except (socket.timeout, TimeoutError, ssl.SSLError, ConnectionResetError):
    pass
sys.stdout.buffer.write(out)
