"""Agent mode: serve-tools."""
from __future__ import annotations

import json
from pathlib import Path

import click

from volvqa.cli.main import main
from volvqa.errors import VolvqaInputError


@main.command("serve-tools")
@click.option("--qa", "qa_dir", type=click.Path(path_type=Path), default=None,
              help="A built benchmark: every tool takes a case_id.")
@click.option("--volume", type=click.Path(path_type=Path), default=None, help="One scan (NIfTI or DICOM folder).")
@click.option("--masks", type=click.Path(path_type=Path), default=None, help="With --volume: its masks (oracle).")
@click.option("--labels", "label_spec", default="auto", show_default=True,
              help="With --masks: how to read label ids (auto | totalsegmentator | ... | a YAML/JSON mapping).")
@click.option("--phase", default=None, help="With --volume: the contrast phase, if known.")
@click.option("--mode", "tool_mode", type=click.Choice(["oracle", "predicted", "vision"]), default="oracle",
              show_default=True)
@click.option("--segmenter", default=None, help="Predicted mode: monai:runs/NAME | totalseg ...")
@click.option("--device", default="auto", show_default=True)
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              help="stdio (spawned by an MCP client) or streamable HTTP at http://HOST:PORT/mcp.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="HTTP: the address to listen on. Anything but loopback needs --allow-remote and a token.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--allow-remote", is_flag=True,
              help="HTTP: allow a non-loopback --host (then a bearer token is required).")
@click.option("--token-env", default="VOLVQA_TOOLS_TOKEN", show_default=True,
              help="HTTP: environment variable holding the bearer token every request must carry.")
@click.option("--allowed-host", "allowed_hosts", multiple=True,
              help="HTTP: a host name clients use to reach the server (Host/Origin checks); repeatable.")
@click.option("--schemas", "print_schemas", is_flag=True, help="Print the OpenAI tool schemas (JSON) and exit.")
def serve_tools_cmd(qa_dir, volume, masks, label_spec, phase, tool_mode, segmenter, device, transport, host, port,
                    allow_remote, token_env, allowed_hosts, print_schemas):
    """Serve segment_organ, measure, lookup_knowledge and render over MCP."""
    import os

    from volvqa.agent.mcp_server import http_security, serve
    from volvqa.agent.service import ToolService
    if volume is not None and not volume.exists():
        raise VolvqaInputError(volume, "not found")
    if masks is not None and not masks.exists():
        raise VolvqaInputError(masks, "not found")
    token = os.environ.get(token_env, "") if transport == "http" else ""
    if transport == "http":   # refused before anything is loaded
        http_security(host, allow_remote=allow_remote, token=token, allowed_hosts=tuple(allowed_hosts))
    service = ToolService(qa_dir=qa_dir, volume=volume, masks=masks, label_spec=label_spec, mode=tool_mode,
                          segmenter=segmenter, device=device, phase=phase)
    if print_schemas:
        click.echo(json.dumps(service.schemas(), indent=1))
        return
    serve(service, transport=transport, host=host, port=port, allow_remote=allow_remote, token=token,
          allowed_hosts=tuple(allowed_hosts))
