"""WebSocket echo server for sluice e2e tests (runs in the test's namespace).

usage: ws_server.py ADDR PORT RECORD [CERT KEY]   (with CERT and KEY: wss://)
Echoes every message back and appends each received message to RECORD.
Accepts the graphql-transport-ws / graphql-ws subprotocols when offered, and permessage-deflate.
"""
import asyncio
import json
import sys

from websockets.asyncio.server import serve

ADDR, PORT, RECORD = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TLS = sys.argv[4:6] if len(sys.argv) >= 6 else None


async def handler(ws):
    async for msg in ws:
        with open(RECORD, "a") as f:
            kind = "text" if isinstance(msg, str) else "binary"
            f.write(json.dumps({"kind": kind, "data": msg if kind == "text" else msg.hex(), "path": ws.request.path}) + "\n")
        await ws.send(msg)


def pick(connection, offered):
    """Accept a GraphQL subprotocol when offered; plain WebSocket otherwise."""
    for p in offered:
        if p in ("graphql-transport-ws", "graphql-ws"):
            return p
    return None


async def main():
    ctx = None
    if TLS:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(TLS[0], TLS[1])
    async with serve(handler, ADDR, PORT, ssl=ctx, select_subprotocol=pick, max_size=16 * 1024 * 1024):
        print("ready", flush=True)
        await asyncio.Future()


asyncio.run(main())
