"""OpenAI's images and audio APIs as their public reference shows them
(platform.openai.com/docs/api-reference/images, /audio), for the fake OpenAI and Azure
OpenAI services: what each endpoint refuses, and its answers. Transcription and
translation answers are the recordings in fixtures/openai; images and speech have none,
so their answers are written from the reference's examples."""

import base64
import json
import time
from email.parser import BytesParser
from email.policy import HTTP

import yaml

from responses_api import FIXTURES_OPENAI

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" * 64  # an ID3 header and MPEG frames
IMAGE_USAGE = {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
               "input_tokens_details": {"text_tokens": 10, "image_tokens": 40}}
SPEECH_USAGE = {"input_tokens": 14, "output_tokens": 101, "total_tokens": 115}
TRANSCRIPT_USAGE = {"type": "tokens", "input_tokens": 14, "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
                    "output_tokens": 45, "total_tokens": 59}


def _recorded(name):
    data = yaml.safe_load((FIXTURES_OPENAI / name).read_text())
    return data["interactions"][0]["response"]["body"]


TRANSCRIPTION = _recorded("audio-transcription-basic.yaml")
TRANSLATION = _recorded("audio-translation-basic.yaml")


def invalid(message, param=None):
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}


def parse_form(content_type, body):
    """The text fields of a multipart/form-data body, and the file's name and size; or
    the error OpenAI answers."""
    if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
        return None, invalid("Invalid Content-Type header, expected multipart/form-data.")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        return None, invalid("Could not parse multipart form")
    form = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename():
            form[name] = {"filename": part.get_filename(), "size": len(payload)}
        else:
            form[name] = payload.decode()
    if "file" not in form:
        return None, invalid("you must provide a file", "file")
    if "model" not in form:
        return None, invalid("you must provide a model parameter", "model")
    return form, None


def check(api, request):
    """What the real service refuses in a JSON request to `api` (400), or None."""
    required = {"images/generations": ("prompt",), "audio/speech": ("model", "input", "voice")}.get(api, ())
    for field in required:
        if field not in request:
            return invalid(f"Missing required parameter: '{field}'.", field)
    return None


def image(request):
    return json.dumps({"created": int(time.time()), "background": "opaque", "data": [{"b64_json": PNG}],
                       "output_format": "png", "quality": "high", "size": request.get("size", "1024x1024"),
                       "usage": IMAGE_USAGE})


def image_stream(request):
    events = [{"type": "image_generation.partial_image", "b64_json": PNG, "partial_image_index": 0},
              {"type": "image_generation.completed", "b64_json": PNG, "created_at": int(time.time()),
               "size": "1024x1024", "quality": "high", "background": "opaque", "output_format": "png",
               "usage": IMAGE_USAGE}]
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]


def speech_stream():
    chunks = [MP3[i:i + 64] for i in range(0, len(MP3), 64)]
    events = [{"type": "speech.audio.delta", "audio": base64.b64encode(c).decode()} for c in chunks]
    events.append({"type": "speech.audio.done", "usage": SPEECH_USAGE})
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]


def transcript_stream():
    text = json.loads(TRANSCRIPTION)["text"]
    events = [{"type": "transcript.text.delta", "delta": w + " ", "logprobs": []} for w in text.split(" ")]
    events.append({"type": "transcript.text.done", "text": text, "logprobs": [], "usage": TRANSCRIPT_USAGE})
    return [f"data: {json.dumps(e)}\n\n" for e in events]
