"""Agent mode: tools over a case's findings, their schemas, an MCP server, gold traces and the agent loop.

- ``tools``: ``CaseTools`` (segment_organ, measure, lookup_knowledge, render).
- ``schemas``: OpenAI function-calling schemas of the tools.
- ``service``: the tools of one scan or of a built benchmark's cases (oracle, predicted, vision).
- ``mcp_server``: ``volvqa serve-tools`` (Model Context Protocol, stdio or streamable HTTP).
- ``traces``: gold tool traces for every QA item (``traces.jsonl``).
- ``loop``: ``predict --model agent:...``: the loop, tool executors (in process or MCP), tool metrics.
- ``scripted``: deterministic agents (a gold-trace player).
- ``openai_agent``: an adapter for OpenAI-compatible chat endpoints (vLLM, ...).
"""
