"""``volvqa serve-tools``: the agent tools over the Model Context Protocol (the ``mcp`` SDK, v2).

The server lists the tools with the same JSON schemas as the OpenAI
function-calling ones (``volvqa.tools.schemas``) and answers ``tools/call``
with the result as JSON text and as structured content; ``render`` adds the
PNG as an image block. A bad call is a result with ``isError`` set and the
error and a hint in its JSON, so the client's model can read it.
Transports: stdio (one client, spawned by it) and streamable HTTP.
"""
from __future__ import annotations

import json

from volvqa.agent.service import ToolService
from volvqa.tools.api import without_images


def _need_mcp() -> None:
    try:
        import mcp.server.lowlevel  # noqa: F401
    except ImportError:
        from volvqa.errors import VolvqaInputError
        raise VolvqaInputError(None, "the MCP server needs the mcp SDK (v2): pip install 'volvqa[agent]'") from None


def make_server(service: ToolService):
    _need_mcp()
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server

    schemas = service.schemas()

    async def list_tools(ctx, params):
        return types.ListToolsResult(tools=[
            types.Tool(name=s["function"]["name"], description=s["function"]["description"],
                       input_schema=s["function"]["parameters"]) for s in schemas])

    async def call_tool(ctx, params):
        # Tools read files and measure arrays: off the event loop.
        result = await anyio.to_thread.run_sync(service.call, params.name, dict(params.arguments or {}))
        text = without_images(result)
        content: list = [types.TextContent(type="text", text=json.dumps(text, sort_keys=True))]
        if "png_base64" in result:
            content.append(types.ImageContent(type="image", data=result["png_base64"], mime_type="image/png"))
        return types.CallToolResult(content=content, structured_content=text, is_error="error" in result)

    from volvqa import __version__
    return Server("volvqa", version=__version__, instructions=(
        "Tools over CT scans: segment_organ, measure, lookup_knowledge"
        + (", render" if service.mode != "vision" else "") + f" ({service.mode} mode). "
        + ("Every call names the benchmark case (case_id). " if service.per_case else "")
        + "A structure reported 'not annotated' is unknown, not absent."),
        on_list_tools=list_tools, on_call_tool=call_tool)



LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: The environment variable holding the bearer token of the HTTP transport.
TOKEN_ENV = "VOLVQA_TOOLS_TOKEN"


def http_security(host: str, *, allow_remote: bool = False, token: str = "",
                  allowed_hosts: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(allowed Host headers, allowed Origins) for serving on ``host``; refuses what is unsafe.

    A loopback address is served as is (a token, if given, is still checked). Any other
    address needs ``allow_remote`` and a token: the tools read patient data.
    """
    from volvqa.errors import VolvqaInputError
    loopback = host in LOOPBACK_HOSTS or host.startswith("127.")
    if not loopback and not allow_remote:
        raise VolvqaInputError(None, f"{host} is not a loopback address: serving the tools beyond this machine "
                               "needs an explicit allow_remote and a bearer token (the token's variable, "
                               f"by default ${TOKEN_ENV})", param="host", value=host)
    if not loopback and not token:
        raise VolvqaInputError(None, f"serving on {host} needs a bearer token: set it in the token's variable "
                               f"(by default ${TOKEN_ENV})", param="host", value=host)
    names = list(LOOPBACK_HOSTS) if loopback else []
    if host not in ("0.0.0.0", "::") and host not in names:
        names.append(host)
    if host in ("0.0.0.0", "::") and not allowed_hosts:
        import socket
        names += sorted({socket.gethostname(), socket.getfqdn()})
    names += list(allowed_hosts)
    fmt = [f"[{n}]" if ":" in n else n for n in names]
    return [f"{n}:*" for n in fmt] + fmt, [f"{scheme}://{n}:*" for n in fmt for scheme in ("http", "https")]


def bearer_guard(app, token: str):
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""
    import hmac
    want = f"Bearer {token}".encode()

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(got, want):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
                return
        await app(scope, receive, send)
    return guarded


def http_app(service: ToolService, host: str = "127.0.0.1", *, allow_remote: bool = False, token: str = "",
             allowed_hosts: tuple[str, ...] = ()):
    """The streamable-HTTP ASGI app, with the transport's Host and Origin checks always on."""
    from mcp.server.transport_security import TransportSecuritySettings
    hosts, origins = http_security(host, allow_remote=allow_remote, token=token, allowed_hosts=allowed_hosts)
    server = make_server(service)
    app = server.streamable_http_app(host=host, transport_security=TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins))
    return bearer_guard(app, token) if token else app


def serve(service: ToolService, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8765, *,
          allow_remote: bool = False, token: str = "", allowed_hosts: tuple[str, ...] = ()) -> None:
    import anyio
    if transport == "stdio":
        from mcp.server.stdio import stdio_server
        server = make_server(service)

        async def main():
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
        anyio.run(main)
    elif transport == "http":
        import uvicorn
        app = http_app(service, host, allow_remote=allow_remote, token=token, allowed_hosts=allowed_hosts)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    else:
        raise ValueError(f"unknown transport {transport!r}: stdio or http")
