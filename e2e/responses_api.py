"""OpenAI's Responses API as its public reference shows it (platform.openai.com/docs/
api-reference/responses): the response object and the streamed events, for the fake
OpenAI and Azure OpenAI services. No recording of it exists in fixtures/, so these are
written from the reference's examples, the state fields echoed from the request as the
real service echoes them."""

import json
import pathlib

TEXT = "In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool."
USAGE = {
    "input_tokens": 36,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 87,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 123,
}
FIXTURES_OPENAI = pathlib.Path(__file__).parent / "fixtures" / "openai"
CREATED_AT = 1741476542  # the reference example's
RESPONSE_ID = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
MESSAGE_ID = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"


def check(request):
    """What the real service refuses (400, its error shape), or None."""
    def invalid(message, param):
        return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    previous = request.get("previous_response_id")
    if previous is not None and not str(previous).startswith("resp"):
        return invalid(f"Invalid 'previous_response_id': '{previous}'. Expected an ID that begins with 'resp'.",
                       "previous_response_id")
    if request.get("background") and request.get("store") is False:
        return invalid("Background mode requires store=true.", "background")
    if "input" not in request and previous is None:
        return invalid("Missing required parameter: 'input'.", "input")
    return None


def response(request, status="completed"):
    """The response object for `request`, as `POST /v1/responses` answers it."""
    done = status == "completed"
    message = {
        "type": "message", "id": MESSAGE_ID, "status": "completed" if done else "in_progress", "role": "assistant",
        "content": [{"type": "output_text", "text": TEXT, "annotations": []}] if done else [],
    }
    return {
        "id": RESPONSE_ID, "object": "response", "created_at": CREATED_AT, "status": status,
        "background": bool(request.get("background")), "error": None, "incomplete_details": None,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "model": f"{request.get('model')}-2025-04-14", "output": [message] if done else [],
        "parallel_tool_calls": True, "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None}, "store": request.get("store", True),
        "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": USAGE if done else None, "user": None, "metadata": {},
    }


def stream(request):
    """The SSE events of a streamed answer to `request`, each with its blank line."""
    words = TEXT.split(" ")
    deltas = [w if i == 0 else " " + w for i, w in enumerate(words)]
    part = {"type": "output_text", "text": "", "annotations": []}
    item = dict(response(request)["output"][0], status="in_progress", content=[])
    done = response(request)
    events = [
        {"type": "response.created", "response": response(request, "in_progress")},
        {"type": "response.in_progress", "response": response(request, "in_progress")},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", "item_id": MESSAGE_ID, "output_index": 0, "content_index": 0,
         "part": part},
        *({"type": "response.output_text.delta", "item_id": MESSAGE_ID, "output_index": 0, "content_index": 0,
           "delta": d, "logprobs": []} for d in deltas),
        {"type": "response.output_text.done", "item_id": MESSAGE_ID, "output_index": 0, "content_index": 0,
         "text": TEXT, "logprobs": []},
        {"type": "response.content_part.done", "item_id": MESSAGE_ID, "output_index": 0, "content_index": 0,
         "part": dict(part, text=TEXT)},
        {"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]},
        {"type": "response.completed", "response": done},
    ]
    return [f"event: {e['type']}\ndata: {json.dumps(dict(e, sequence_number=n))}\n\n" for n, e in enumerate(events)]
