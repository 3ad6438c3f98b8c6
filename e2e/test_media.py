"""Images and audio with the official OpenAI SDK: `/v1/images/generations`,
`/v1/audio/speech`, `/v1/audio/transcriptions` and `/v1/audio/translations` routed by
`model` (read from the multipart form for the audio uploads) to OpenAI and Azure OpenAI,
and metered as Envoy AI Gateway meters them (token usage where the answer reports it)."""

import json

import httpx
import openai
import pytest

import openai_media
from harness import backend_yaml, route_yaml

AUDIO = b"RIFF" + b"\x00" * 4000 + b"WAVE"  # the bytes of an upload; the fake does not decode audio


@pytest.fixture
def gw(gateway_factory, openai_fake, azure_fake):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("azure", "AzureOpenAI", azure_fake.port, policy="AzureAPIKey", key="azure-secret-key",
                     version="2025-01-01-preview"),
        route_yaml("route", [
            ("gpt-image-1", [("openai", 0, None)]),
            ("azure-image", [("azure", 0, "my-image")]),
            ("gpt-4o-mini-tts", [("openai", 0, None)]),
            ("whisper-1", [("openai", 0, None)]),
            ("my-whisper", [("openai", 0, "whisper-1")]),
            ("azure-whisper", [("azure", 0, "whisper")]),
            ("gpt-4o-transcribe", [("openai", 0, None)]),
        ]),
        extra_args=["--max-body-bytes", "200000"],
    )


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-key", max_retries=0)


def usage(gw, operation, kind):
    return gw.metric("gen_ai_client_token_usage_sum", gen_ai_operation_name=operation, gen_ai_token_type=kind)


def test_image_generation_unary_and_streamed(client, gw, openai_fake, azure_fake):
    image = client.images.generate(model="gpt-image-1", prompt="a cat wearing a hat", size="1024x1024")
    assert image.data[0].b64_json == openai_media.PNG and image.usage.total_tokens == 100
    assert openai_fake.last()["path"] == "/v1/images/generations"
    assert usage(gw, "image_generation", "input") == 50 and usage(gw, "image_generation", "output") == 50
    events = list(client.images.generate(model="gpt-image-1", prompt="a cat", stream=True, partial_images=1))
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.completed"]
    assert usage(gw, "image_generation", "output") == 100
    client.images.generate(model="azure-image", prompt="a cat")
    assert azure_fake.last()["path"] == "/openai/deployments/my-image/images/generations?api-version=2025-01-01-preview"


def test_speech_audio_and_sse(client, gw, openai_fake):
    speech = client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="Hello there.")
    assert speech.content == openai_media.MP3
    assert openai_fake.last()["body"] == {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "Hello there."}
    assert gw.metric("gen_ai_server_request_duration_seconds_count", gen_ai_operation_name="speech", error_type="") == 1
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="alloy", input="Hi",
                                                            stream_format="sse") as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    assert usage(gw, "speech", "input") == 14 and usage(gw, "speech", "output") == 101


def test_transcription_reads_model_from_the_form_and_passes_the_bytes(client, gw, openai_fake):
    sent = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.read())]})
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-key", max_retries=0, http_client=http)
    text = sdk.audio.transcriptions.create(model="whisper-1", file=("hello.wav", AUDIO))
    assert text.text == json.loads(openai_media.TRANSCRIPTION)["text"]
    seen = openai_fake.last()
    assert seen["path"] == "/v1/audio/transcriptions" and seen["raw"] == sent[-1]
    assert seen["body"]["file"] == {"filename": "hello.wav", "size": len(AUDIO)}
    assert gw.metric("gen_ai_server_request_duration_seconds_count", gen_ai_operation_name="transcription",
                     gen_ai_original_model="whisper-1", error_type="") == 1
    # A modelNameOverride rewrites the form's model field, and only it.
    sdk.audio.transcriptions.create(model="my-whisper", file=("hello.wav", AUDIO), language="en")
    seen = openai_fake.last()
    assert seen["body"]["model"] == "whisper-1" and seen["body"]["language"] == "en"
    assert seen["raw"] == sent[-1].replace(b"my-whisper", b"whisper-1")


def test_transcription_stream_is_metered_from_its_last_event(client, gw):
    events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", AUDIO), stream=True))
    assert events[-1].type == "transcript.text.done"
    assert usage(gw, "transcription", "input") == 14 and usage(gw, "transcription", "output") == 45


def test_translation_and_azure_deployment_path(client, azure_fake):
    out = client.audio.translations.create(model="whisper-1", file=("a.wav", AUDIO))
    assert out.text == json.loads(openai_media.TRANSLATION)["text"]
    client.audio.transcriptions.create(model="azure-whisper", file=("a.wav", AUDIO))
    seen = azure_fake.last()
    assert seen["path"] == "/openai/deployments/whisper/audio/transcriptions?api-version=2025-01-01-preview"
    assert seen["body"]["model"] == "whisper" and seen["headers"]["api-key"] == "azure-secret-key"


def test_bad_forms_get_clear_errors(gw, openai_fake):
    files = {"file": ("a.wav", AUDIO)}
    r = httpx.post(gw.url + "/v1/audio/transcriptions", files=files, timeout=10)
    assert r.status_code == 400 and "no `model` field" in r.json()["error"]["message"]
    r = httpx.post(gw.url + "/v1/audio/transcriptions", files=files, data={"model": "nope"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(gw.url + "/v1/audio/transcriptions", json={"model": "whisper-1"}, timeout=10)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
    big = {"file": ("big.wav", b"\x00" * 300_000)}
    r = httpx.post(gw.url + "/v1/audio/transcriptions", files=big, data={"model": "whisper-1"}, timeout=10)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert openai_fake.requests == []
