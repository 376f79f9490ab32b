"""``--model agent:openai`` / ``agent:module:Class``: the registry's factory for agent answerers."""
from __future__ import annotations

import inspect
from pathlib import Path

from volvqa.errors import VolvqaInputError
from volvqa.plugins import load_object

AGENT_OPTIONS = ("tool_mode", "tools_via", "max_steps", "timeout_s", "base_url", "model_name", "api_key_env")


def from_request(arg, request):
    if request.qa_dir is None:
        raise VolvqaInputError(None, "agent models answer a built benchmark", param="model", value=f"agent:{arg}")
    opts = {k: v for k, v in request.options.items() if k in AGENT_OPTIONS and v is not None}
    return make_agent(f"agent:{arg or ''}", request.qa_dir, request.mode, segmenter=request.segmenter,
                      device=request.device, **opts)


def make_agent(spec: str, qa_dir: Path, mode: str, tool_mode: str = "oracle", tools_via: str = "local",
               segmenter: str | None = None, device: str = "auto", max_steps: int | None = None,
               timeout_s: float | None = None, base_url: str | None = None, model_name: str | None = None,
               api_key_env: str = "OPENAI_API_KEY"):
    """``agent:openai`` or ``agent:module:Class`` -> an AgentAnswerer whose tools run in process or
    through ``volvqa serve-tools`` over stdio (MCP)."""
    from volvqa.agent.loop import DEFAULT_MAX_STEPS, DEFAULT_TIMEOUT_S, AgentAnswerer, McpExecutor, serve_tools_argv
    from volvqa.agent.service import ToolService
    target = spec.split(":", 1)[1]
    if tool_mode == "predicted" and not segmenter:
        raise VolvqaInputError(None, "predicted tools need a segmenter", param="segmenter")
    if target == "openai":
        if not base_url or not model_name:
            raise VolvqaInputError(None, "agent:openai needs the endpoint's base URL and model name",
                                   param="base_url", value=base_url)
        from volvqa.agent.openai_agent import OpenAIChatAgent
        agent = OpenAIChatAgent(base_url, model_name, api_key_env=api_key_env)
    else:
        if ":" not in target:
            raise VolvqaInputError(None, "expected agent:openai or agent:module:Class", param="model", value=spec)
        cls = load_object(target, what="agent")
        # A class whose constructor takes qa_dir gets the benchmark folder (its train split, traces ...).
        takes = "qa_dir" in inspect.signature(cls).parameters
        agent = cls(qa_dir=qa_dir) if takes else cls()
    if tools_via == "mcp":
        executor = McpExecutor(serve_tools_argv(qa_dir, tool_mode, segmenter, device))
    elif tools_via == "local":
        executor = ToolService(qa_dir=qa_dir, mode=tool_mode, segmenter=segmenter, device=device)
    else:
        raise VolvqaInputError(None, "tools run local or mcp", param="tools_via", value=tools_via)
    try:
        return AgentAnswerer(agent, spec, executor, tool_mode=tool_mode, mode=mode,
                             max_steps=max_steps or DEFAULT_MAX_STEPS, timeout_s=timeout_s or DEFAULT_TIMEOUT_S)
    except TypeError as e:
        raise VolvqaInputError(None, str(e)) from None
