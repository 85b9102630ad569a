"""Minimal UDP DNS server for the DNS rebinding test (sluice e2e).

Usage: dns_server.py ADDR PORT RECORD PUBLIC_IP PRIVATE_IP

A queries:
  * a name whose first label starts with `rebind`: the first query for that
    name is answered with PUBLIC_IP, every later one with PRIVATE_IP;
  * a name whose first label starts with `private`: always PRIVATE_IP;
  * anything else: NXDOMAIN.
AAAA queries get an empty NOERROR answer. Every query is appended to RECORD
as one JSON line {"name", "type", "answer"}; prints `ready` once bound.
"""
import json
import socket
import struct
import sys

ADDR, PORT, RECORD = sys.argv[1], int(sys.argv[2]), sys.argv[3]
PUBLIC, PRIVATE = sys.argv[4], sys.argv[5]
SEEN = {}


def parse_question(msg):
    labels, i = [], 12
    while True:
        n = msg[i]
        i += 1
        if n == 0:
            break
        labels.append(msg[i:i + n].decode("ascii", "replace"))
        i += n
    qtype, qclass = struct.unpack("!HH", msg[i:i + 4])
    return ".".join(labels).lower(), qtype, qclass, msg[12:i + 4]


def reply(msg):
    (qid, flags, qd) = struct.unpack("!HHH", msg[:6])
    name, qtype, _qclass, question = parse_question(msg)
    first = name.split(".")[0]
    answer = None
    rcode = 0
    if qtype == 1:
        if first.startswith("rebind"):
            answer = PUBLIC if name not in SEEN else PRIVATE
            SEEN[name] = SEEN.get(name, 0) + 1
        elif first.startswith("private"):
            answer = PRIVATE
        else:
            rcode = 3
    elif not (first.startswith("rebind") or first.startswith("private")):
        rcode = 3
    with open(RECORD, "a") as f:
        f.write(json.dumps({"name": name, "type": qtype, "answer": answer}) + "\n")
    rd = flags & 0x0100
    out_flags = 0x8000 | 0x0400 | rd | 0x0080 | rcode
    header = struct.pack("!HHHHHH", qid, out_flags, 1, 1 if answer else 0, 0, 0)
    body = question
    if answer:
        body += struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(answer)
    return header + body


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((ADDR, PORT))
print("ready", flush=True)
while True:
    data, peer = sock.recvfrom(4096)
    try:
        sock.sendto(reply(data), peer)
    except (IndexError, struct.error, UnicodeError):
        continue
