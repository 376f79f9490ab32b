"""An agent behind an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, ...).

``predict --model agent:openai --base-url http://gpu-node:8000/v1 --model-name Qwen/...``:
each turn posts the conversation and the tool schemas to ``<base-url>/chat/completions``
(``tool_choice: auto``, temperature 0) and returns the model's message, tool calls or answer.
The key, if the endpoint needs one, is read from the environment variable named by
``api_key_env`` (default ``OPENAI_API_KEY``), never from the command line.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send the Authorization header on to
    wherever the server points (another host included)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None   # urlopen then raises HTTPError with the 3xx code


_OPENER = urllib.request.build_opener(_NoRedirect)


class OpenAIChatAgent:
    def __init__(self, base_url: str, model_name: str, api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.0, max_tokens: int = 1024, timeout_s: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name, self.temperature, self.max_tokens, self.timeout_s = model_name, temperature, max_tokens, \
            timeout_s
        self.api_key = os.environ.get(api_key_env, "")

    def act(self, messages: list[dict], tools: list[dict], task: dict) -> dict:
        # Tool messages go without the "name" field some strict servers reject.
        sent = [{k: v for k, v in m.items() if not (m.get("role") == "tool" and k == "name")} for m in messages]
        body = {"model": self.model_name, "messages": sent, "tools": tools, "tool_choice": "auto",
                "temperature": self.temperature, "max_tokens": self.max_tokens}
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as r:
                data = json.loads(r.read())
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                raise RuntimeError(f"{self.url}: HTTP {e.code} redirect to {e.headers.get('Location', '?')!r} "
                                   "not followed (the API key is never sent on); give the final URL "
                                   "as --base-url") from None
            raise RuntimeError(f"{self.url}: HTTP {e.code}: {e.read()[:200]!r}") from None
        msg = data["choices"][0]["message"]
        if msg.get("tool_calls"):
            return {"role": "assistant", "content": msg.get("content"), "tool_calls": msg["tool_calls"]}
        return {"answer": (msg.get("content") or "").strip()}
