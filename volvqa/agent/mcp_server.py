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



def serve(service: ToolService, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8765) -> None:
    import anyio
    server = make_server(service)
    if transport == "stdio":
        from mcp.server.stdio import stdio_server

        async def main():
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
        anyio.run(main)
    elif transport == "http":
        import uvicorn
        uvicorn.run(server.streamable_http_app(host=host), host=host, port=port, log_level="warning")
    else:
        raise ValueError(f"unknown transport {transport!r}: stdio or http")
