"""Raw TCP recorder for sluice e2e tests.

Appends every byte it reads (per connection) to the record file, so a test
can prove that nothing of a refused request reached the upstream. Answers
`HTTP/1.1 200 OK` with a 2-byte body each time it sees the end of a head,
so HTTP clients get replies; non-HTTP bytes are simply recorded.
"""
import socket
import sys
import threading

ADDR, PORT, RECORD = sys.argv[1], int(sys.argv[2]), sys.argv[3]
LOCK = threading.Lock()


def serve(conn):
    seen = b""
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            with LOCK, open(RECORD, "ab") as f:
                f.write(data)
            seen += data
            while b"\r\n\r\n" in seen:
                _, _, seen = seen.partition(b"\r\n\r\n")
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                except OSError:
                    return


srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((ADDR, PORT))
srv.listen(64)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
