import json

from router.sse import UsageTap

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
DONE = b"data: [DONE]\n\n"


def test_events_pass_through_byte_for_byte_and_usage_is_read() -> None:
    tap = UsageTap(forward_usage_chunk=True)
    out = tap.feed(CHUNK + USAGE + DONE)
    assert out == CHUNK + USAGE + DONE
    assert tap.usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert tap.done


def test_usage_chunk_is_dropped_when_the_client_did_not_ask() -> None:
    tap = UsageTap(forward_usage_chunk=False)
    assert tap.feed(CHUNK + USAGE + DONE) == CHUNK + DONE
    assert tap.usage is not None and tap.usage["total_tokens"] == 4


def test_events_split_across_reads_are_joined() -> None:
    tap = UsageTap(forward_usage_chunk=True)
    whole = CHUNK + USAGE + DONE
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    assert b"".join(tap.feed(p) for p in pieces) == whole
    assert tap.done


def test_a_torn_event_at_the_end_is_never_forwarded() -> None:
    tap = UsageTap(forward_usage_chunk=True)
    assert tap.feed(CHUNK + b'data: {"choices":[{"ind') == CHUNK
    assert not tap.done


def test_crlf_framing_is_normalised() -> None:
    tap = UsageTap(forward_usage_chunk=True)
    out = tap.feed(CHUNK.replace(b"\n", b"\r\n") + DONE)
    assert json.loads(out.split(b"\n\n")[0][6:])["choices"][0]["delta"]["content"] == "Hi"


def test_the_model_member_names_the_chosen_backend_whatever_the_backend_said() -> None:
    from router.sse import UsageTap

    tap = UsageTap(forward_usage_chunk=True, model=("served-1", "meta-math/MetaMath-Mistral-7B"))
    # vLLM reports its first served name whatever was asked for; a quoted "model" inside text stays as it is.
    out = tap.feed(b'event: response.completed\ndata: {"response": {"id": "r", "model": "local/first", "output": '
                   b'[{"text": "say \\"model\\": \\"x\\""}], "usage": {"input_tokens": 3, "output_tokens": 2}}}\n\n')
    assert b'"model":"meta-math/MetaMath-Mistral-7B"' in out and b'\\"model\\": \\"x\\"' in out
    assert tap.done and tap.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert tap.response_id == "r"
