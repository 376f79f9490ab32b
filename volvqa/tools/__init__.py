"""The case tool API and gold tool traces: the tools an agent calls over one
case's findings, their JSON schemas, and the recorded, replay-verified tool
traces the build writes (``traces.jsonl``).

- ``api``: ``CaseTools`` (segment_organ, measure, lookup_knowledge, render).
- ``view``: what a tool may see (oracle, predicted, vision) and the recorder/replayer.
- ``schemas``: OpenAI function-calling schemas of the tools.
- ``traces``: gold tool traces for every QA item.

Running a model against these tools is ``volvqa.agent``'s business, a layer up.
"""
