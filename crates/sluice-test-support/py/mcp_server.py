"""MCP Streamable HTTP server for sluice e2e tests (runs in the test's namespace).

usage: mcp_server.py ADDR PORT RECORD [CERT KEY]
With CERT and KEY it serves HTTPS (uvicorn with TLS). Every tool call is
appended to RECORD so tests can prove denied calls never reached the server.
"""
import json
import sys

from mcp.server.fastmcp import FastMCP

ADDR, PORT, RECORD = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TLS = sys.argv[4:6] if len(sys.argv) >= 6 else None
mcp = FastMCP("sluice-e2e", host=ADDR, port=PORT)


def record(tool, args):
    with open(RECORD, "a") as f:
        f.write(json.dumps({"tool": tool, "args": args}) + "\n")


@mcp.tool()
def search_web(query: str) -> str:
    record("search_web", {"query": query})
    return f"results for {query}"


@mcp.tool()
def read_file(path: str) -> str:
    record("read_file", {"path": path})
    return f"contents of {path}"


@mcp.tool()
def execute_code(code: str) -> str:
    record("execute_code", {"code": code})
    return "executed"


if __name__ == "__main__":
    import threading, time, socket

    def announce():
        for _ in range(200):
            try:
                socket.create_connection((ADDR, PORT), 0.2).close()
                print("ready", flush=True)
                return
            except OSError:
                time.sleep(0.05)

    threading.Thread(target=announce, daemon=True).start()
    if TLS:
        import uvicorn

        uvicorn.run(mcp.streamable_http_app(), host=ADDR, port=PORT, ssl_certfile=TLS[0], ssl_keyfile=TLS[1], log_level="warning")
    else:
        mcp.run(transport="streamable-http")
