"""A local OpenAI-compatible server for the instrumentation tests: `/v1/chat/completions`, plain
and streamed (SSE), with usage that includes cached and reasoning tokens, and an error for the
model `no-such-model`. Every answer is also appended to `--answers` (one JSON line per call), so
that a test compares the stored records with what the server really answered, not with
constants of its own.

Run: `python fake_openai.py --port N --answers FILE` (prints `ready` once listening).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

from aiohttp import web

MISSING_MODEL = "no-such-model"
_ids = itertools.count(1)


def _usage(messages: list[dict]) -> dict:
    prompt_tokens = 10 + sum(len(str(m.get("content", ""))) for m in messages) // 4
    return {"prompt_tokens": prompt_tokens, "completion_tokens": 7, "total_tokens": prompt_tokens + 7,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _answer_text(messages: list[dict]) -> str:
    last = str(messages[-1].get("content", "")) if messages else ""
    return f"Answer #{len(last)}: Paris."


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    answers = request.app["answers"]
    model, messages = body.get("model"), body.get("messages", [])
    if model == MISSING_MODEL:
        error = {"message": f"The model `{model}` does not exist", "type": "invalid_request_error",
                 "param": None, "code": "model_not_found"}
        _note(answers, {"request_model": model, "status": 404, "error": error, "messages": messages})
        return web.json_response({"error": error}, status=404)
    completion_id = f"chatcmpl-fake-{next(_ids)}"
    served_model = f"{model}-2024-07-18"
    text, usage, created = _answer_text(messages), _usage(messages), int(time.time())
    _note(answers, {"request_model": model, "status": 200, "id": completion_id, "model": served_model,
                    "text": text, "usage": usage, "messages": messages, "stream": bool(body.get("stream"))})
    if not body.get("stream"):
        return web.json_response({
            "id": completion_id, "object": "chat.completion", "created": created, "model": served_model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": served_model,
            "system_fingerprint": "fp_fake"}
    chunks = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    chunks += [{"index": 0, "delta": {"content": piece}, "finish_reason": None} for piece in (text[:9], text[9:])]
    chunks += [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    for choice in chunks:
        await response.write(f"data: {json.dumps({**head, 'choices': [choice]})}\n\n".encode())
    if (body.get("stream_options") or {}).get("include_usage"):
        await response.write(f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _note(path: str, answer: dict) -> None:
    with open(path, "a") as answers:
        answers.write(json.dumps(answer) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answers", required=True)
    args = parser.parse_args()
    app = web.Application()
    app["answers"] = args.answers
    app.router.add_post("/v1/chat/completions", chat_completions)
    web.run_app(app, host="127.0.0.1", port=args.port, print=lambda *_: print("ready", flush=True))


if __name__ == "__main__":
    main()
