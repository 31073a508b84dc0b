"""SSE parsing and timing of one streamed completion (vllm bench serve's definitions), on a
byte stream in the format vLLM's /v1/completions sends with stream_options.include_usage."""

import pytest

from sagellm.benchmarks.metrics import compute_metrics, request_latencies
from sagellm.benchmarks.openai_stream import StreamTimer, failed_metrics

# A vLLM 0.x /v1/completions stream (ids shortened), max_tokens=3, ignore_eos, include_usage:
# three token chunks, the last with finish_reason "length", then the usage chunk, then [DONE].
RECORDED = (
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":'
    b'[{"index":0,"text":" Paris","logprobs":null,"finish_reason":null,"stop_reason":null}],'
    b'"usage":null}\n\n'
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":'
    b'[{"index":0,"text":"","logprobs":null,"finish_reason":null,"stop_reason":null}],'
    b'"usage":null}\n\n'
    b": keep-alive comment\n\n"
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":'
    b'[{"index":0,"text":" is","logprobs":null,"finish_reason":"length","stop_reason":null}],'
    b'"usage":null}\n\n'
    b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3,'
    b'"prompt_tokens_details":{"cached_tokens":2}}}\n\n'
    b"data: [DONE]\n\n"
)


def feed_all(timer: StreamTimer, body: bytes, times: list[float]) -> None:
    lines = body.decode().split("\n")
    assert len(lines) == len(times) + 1  # the body ends in a newline
    for line, t in zip(lines, times, strict=False):
        timer.feed(line, t)
    timer.close(times[-1])


def test_recorded_vllm_stream_times_and_counts():
    lines = RECORDED.decode().split("\n")
    # line i arrives at 10 + i/10 s; the request was sent at 10.0
    times = [10.0 + i / 10 for i in range(len(lines) - 1)]
    timer = StreamTimer("r0", 10.0, num_prompt_tokens=5)
    feed_all(timer, RECORDED, times)
    m = timer.metrics()
    # token chunk events end at lines 1, 3 and 7 (the blank line closing each event)
    assert m.token_times_s == pytest.approx([10.1, 10.3, 10.7])
    assert m.first_token_s == pytest.approx(10.1) and m.finished_s == pytest.approx(10.7)
    assert m.num_output_tokens == 3 and m.num_prompt_tokens == 5 and m.num_cached_tokens == 2
    assert m.finish_reason == "length" and m.error is None
    assert timer.done and "".join(timer.text) == " Paris is"
    ttft, tpot, itls = request_latencies(m)
    assert ttft == pytest.approx(0.1)
    assert tpot == pytest.approx((0.7 - 0.1) / 2)
    assert itls == pytest.approx([0.2, 0.4])


def test_finish_only_chunk_is_not_a_token():
    timer = StreamTimer("r", 0.0, 4)
    timer.feed('data: {"choices":[{"index":0,"text":"a","finish_reason":null}]}', 1.0)
    timer.feed("", 1.0)
    timer.feed('data: {"choices":[{"index":0,"text":"","finish_reason":"stop"}]}', 2.0)
    timer.feed("", 2.0)
    timer.feed("data: [DONE]", 3.0)
    timer.feed("", 3.0)
    m = timer.metrics()
    assert m.token_times_s == [1.0] and m.num_output_tokens == 1  # no usage: chunk count
    assert m.finish_reason == "stop" and m.finished_s == 1.0


def test_chat_delta_chunks_and_crlf():
    timer = StreamTimer("r", 0.0, 4)
    for t, content in ((1.0, "x"), (1.5, "y")):
        timer.feed(f'data: {{"choices":[{{"delta":{{"content":"{content}"}}}}]}}\r', t)
        timer.feed("\r", t)
    timer.feed('data: {"choices":[{"delta":{},"finish_reason":"length"}]}', 2.0)
    timer.close(2.0)
    m = timer.metrics()
    assert m.token_times_s == [1.0, 1.5] and m.finish_reason == "length"


def test_error_chunk_and_truncated_stream_fail_the_request():
    timer = StreamTimer("r", 0.0, 4)
    timer.feed('data: {"choices":[{"text":"a","finish_reason":null}]}', 1.0)
    timer.feed("", 1.0)
    timer.feed('data: {"error":{"message":"engine died","type":"InternalError"}}', 2.0)
    timer.close(2.0)
    m = timer.metrics()
    assert m.finish_reason == "error" and m.error == "engine died"
    cut = StreamTimer("r", 0.0, 4)
    cut.feed('data: {"choices":[{"text":"a","finish_reason":null}]}', 1.0)
    cut.close(1.0)
    assert cut.metrics().error == "the stream ended without a finish_reason"
    empty = StreamTimer("r", 0.0, 4)
    empty.close(1.0)
    assert empty.metrics().error == "the stream ended without a token"
    bad = StreamTimer("r", 0.0, 4)
    bad.feed("data: {not json", 1.0)
    bad.close(1.0)
    assert bad.metrics().error.startswith("malformed SSE chunk")


def test_metric_assembly_counts_failures_apart():
    ok = StreamTimer("ok", 0.0, 5)
    feed_all(ok, RECORDED, [i / 10 for i in range(len(RECORDED.decode().split("\n")) - 1)])
    failed = failed_metrics("bad", 0.2, 7, 5.0, "timed out after 5s")
    m = compute_metrics([ok.metrics(), failed], [])
    assert m["num_requests"] == 2 and m["num_completed"] == 1 and m["num_failed"] == 1
    assert m["total_output_tokens"] == 3 and m["total_input_tokens"] == 5
    assert m["mean_ttft_s"] == pytest.approx(0.1)
    assert m["mfu"] is None and m["comm_share"] is None  # no step metrics client-side
    assert failed.error == "timed out after 5s" and failed.first_token_s is None
