"""Agent mode: a model answers by calling the case tools of ``volvqa.tools``.

- ``service``: the tools of one scan or of a built benchmark's cases (oracle, predicted, vision).
- ``mcp_server``: ``volvqa serve-tools`` (Model Context Protocol, stdio or streamable HTTP).
- ``loop``: ``predict --model agent:...``: the loop, tool executors (in process or MCP), tool metrics.
- ``scripted``: deterministic agents (a gold-trace player).
- ``openai_agent``: an adapter for OpenAI-compatible chat endpoints (vLLM, ...).
"""
