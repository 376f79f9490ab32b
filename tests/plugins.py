"""A user plug-in for the tests: the interface is one generate() method.

It reads the question's numbers only, never the image: it answers the
option whose number is largest (or "yes"), which lets the tests check the
plug-in path and the scoring of a model that is wrong in a known way."""


class LargestOption:
    def generate(self, prompt, volume=None, images=None):
        lines = [ln for ln in prompt.splitlines() if len(ln) > 2 and ln[1:3] == ". "]
        if not lines:
            return "yes"
        best = None
        for ln in lines:
            try:
                v = float(ln[3:].split()[0])
            except (ValueError, IndexError):
                continue
            if best is None or v > best[0]:
                best = (v, ln[0])
        return best[1] if best else lines[0][0]


class _Recorder:
    """Records what generate() receives; answers 'A'."""

    calls: list = []

    def generate(self, prompt, volume=None, images=None):
        type(self).calls.append({"prompt": prompt, "volume": volume, "images": images})
        return "A"


class RecordVolume(_Recorder):
    calls: list = []


class RecordKeySlice(_Recorder):
    input_format = "key_slice"
    calls: list = []


class RecordViews(_Recorder):
    input_format = "views"
    calls: list = []


class RecordVideo(_Recorder):
    input_format = "video"
    calls: list = []


class RecordM3D(_Recorder):
    input_format = "m3d"
    calls: list = []


class RecordSystemKeySlice:
    """Records the prompt and the system prompt (a generate() that takes system=)."""

    input_format = "key_slice"
    calls: list = []

    def generate(self, prompt, volume=None, images=None, system=None):
        type(self).calls.append({"prompt": prompt, "system": system, "images": images})
        return "A"


class MistakenAgent:
    """An agent that gets tools wrong and never answers: an unknown tool, then a bad argument, then
    one valid call per turn, forever (the loop's step cap stops it)."""

    def act(self, messages, tools, task):
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if turn == 0:
            return {"tool_calls": [{"name": "segment_everything", "arguments": {"target": "liver"}}]}
        if turn == 1:
            return {"tool_calls": [{"name": "measure", "arguments": {"target": "liver", "quantity": "weight"}}]}
        return {"tool_calls": [{"name": "segment_organ", "arguments": {"target": "liver"}}]}


class CrashingAgent:
    def act(self, messages, tools, task):
        raise RuntimeError("model server unreachable")


class SlowAgent:
    """Takes longer than the loop allows for its first turn."""

    def act(self, messages, tools, task):
        import time
        time.sleep(3)
        return {"answer": "A"}
