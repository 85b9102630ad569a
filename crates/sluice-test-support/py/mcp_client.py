"""MCP SDK client for the e2e tests: `python3 mcp_client.py URL`.

Lists the tools, then calls each case in its own session (the SDK tears a
session down when the proxy refuses one of its POSTs, so each denied call is
observed on its own). Prints one line per step: `NAME ok RESULT` or
`NAME refused ERRORTYPE`. Proxy and CA come from the environment.
"""
import asyncio
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

URL = sys.argv[1]
CASES = [
    ("search_web", {"query": "rust"}),
    ("read_file", {"path": "/workspace/a.txt"}),
    ("read_file", {"path": "/etc/shadow"}),
    ("execute_code", {"code": "rm -rf /"}),
]


async def session_call(name=None, args=None):
    async with streamablehttp_client(URL) as (r, w, _):
        async with ClientSession(r, w) as session:
            await session.initialize()
            if name is None:
                tools = await session.list_tools()
                return ",".join(sorted(t.name for t in tools.tools))
            res = await session.call_tool(name, args)
            return res.content[0].text


async def attempt(name=None, args=None):
    try:
        return "ok " + await asyncio.wait_for(session_call(name, args), 15)
    except BaseException as e:  # the SDK raises group/cancel errors on a refusal
        return "refused " + type(e).__name__


async def main():
    print("tools", await attempt(), flush=True)
    for name, args in CASES:
        print(name, await attempt(name, args), flush=True)


asyncio.run(main())
