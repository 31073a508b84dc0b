"""Bad input gets a clear error naming the field; the engine keeps serving the others."""

import struct
import uuid

import pytest
import torch

from sagellm.core import InvalidRequestError, ModelLoadError, Request, SamplingParams
from sagellm.engines.native import NativeEngine


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    return NativeEngine.from_pretrained(folder, max_model_len_tokens=64, num_kv_blocks=32)


@pytest.mark.parametrize(
    "prompt, sampling, match",
    [
        ([], SamplingParams(), "prompt is empty"),
        (list(range(64)), SamplingParams(), "prompt has 64 tokens.*max_model_len_tokens=64"),
        ([1, 2], SamplingParams(max_tokens=0), "sampling.max_tokens must be an integer >= 1"),
        ([1, 2], SamplingParams(max_tokens=-1), "sampling.max_tokens"),
        ([1, 2], SamplingParams(temperature=-1.0), "sampling.temperature must be >= 0"),
        ([1, 2], SamplingParams(top_p=0.0), r"sampling.top_p must be in \(0, 1\]"),
        ([1, 2], SamplingParams(top_p=1.01), "sampling.top_p"),
        ([1, 999], SamplingParams(), r"token ids \[999\] outside \[0, 256\)"),
    ],
)
def test_bad_request_rejected_while_others_finish(engine, prompt, sampling, match):
    good = Request(
        f"good-{uuid.uuid4().hex}", [3, 4, 5], SamplingParams(max_tokens=5, ignore_eos=True)
    )
    engine.add_request(good)
    engine.step()
    with pytest.raises(InvalidRequestError, match=match):
        engine.add_request(Request(f"bad-{uuid.uuid4().hex}", prompt, sampling))
    while engine.has_unfinished():
        engine.step()
    assert len(engine.output_token_ids(good.request_id)) == 5


def test_duplicate_id_and_pool_too_small(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    eng = NativeEngine.from_pretrained(folder, num_kv_blocks=2, block_size_tokens=4)
    eng.add_request(Request("a", [1, 2], SamplingParams(max_tokens=2)))
    with pytest.raises(InvalidRequestError, match="'a' is already in use"):
        eng.add_request(Request("a", [1, 2]))
    with pytest.raises(InvalidRequestError, match="needs 3 KV blocks.*only 2"):
        eng.add_request(Request("b", [1] * 10, SamplingParams(max_tokens=2)))
    while eng.has_unfinished():
        eng.step()
    assert len(eng.output_token_ids("a")) == 2


def test_generate_validates_all_before_queueing(engine):
    with pytest.raises(InvalidRequestError, match="prompt is empty"):
        engine.generate([[1, 2, 3], []])
    assert not engine.has_unfinished()


def test_abort_streams_final_output(engine):
    engine.add_request(Request("ab", [1, 2, 3], SamplingParams(max_tokens=50, ignore_eos=True)))
    engine.step()
    assert engine.abort("ab")
    assert not engine.abort("ab")
    outs = engine.step()
    assert [(o.request_id, o.finished, o.finish_reason) for o in outs] == [("ab", True, "abort")]
    assert engine.kv.num_referenced_blocks == 0


def test_stop_tokens_and_length(engine):
    first = engine.generate([[5, 6, 7]], SamplingParams(max_tokens=6, ignore_eos=True))[0]
    stop_at = first[2]
    out = engine.generate(
        [[5, 6, 7]], SamplingParams(max_tokens=6, ignore_eos=True, stop_token_ids=(stop_at,))
    )[0]
    assert out == first[: first.index(stop_at) + 1]
    # the context limit ends generation with "length"
    outs = []
    engine.add_request(Request("long", [1] * 60, SamplingParams(max_tokens=50)))
    while engine.has_unfinished():
        outs += engine.step()
    last = [o for o in outs if o.request_id == "long"][-1]
    assert last.finish_reason == "length" and len(engine.output_token_ids("long")) == 4


def test_unknown_model_path():
    with pytest.raises(ModelLoadError, match="does not exist.*aliases"):
        NativeEngine.from_pretrained("/nonexistent/model")


def test_corrupt_safetensors(tiny_checkpoint, tmp_path):
    _, folder = tiny_checkpoint("llama")
    bad = tmp_path / "m"
    bad.mkdir()
    (bad / "config.json").write_text((folder / "config.json").read_text())
    data = (folder / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="model.safetensors: corrupt or truncated"):
        NativeEngine.from_pretrained(bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        NativeEngine.from_pretrained(bad)


def test_truncated_and_corrupt_gguf(tmp_path):
    from sagellm.models import resolve_model_path

    src = resolve_model_path("smollm2-135m-instruct")
    data = src.read_bytes()
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="trunc.gguf"):
        NativeEngine.from_pretrained(trunc)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="junk.gguf: corrupt or truncated GGUF"):
        NativeEngine.from_pretrained(junk)


def test_forward_failure_fails_batch_not_engine(engine, monkeypatch):
    """A runtime failure in one step ends that batch's requests with an error; later ones run."""
    real = engine.model.forward
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated out of memory")
        return real(*a, **k)

    monkeypatch.setattr(engine.model, "forward", flaky)
    engine.add_request(Request("f1", [1, 2, 3], SamplingParams(max_tokens=3)))
    outs = engine.step()
    assert outs[0].finish_reason == "error" and "simulated" in outs[0].error
    out = engine.generate([[1, 2, 3]], SamplingParams(max_tokens=3, ignore_eos=True))
    assert len(out[0]) == 3 and torch.is_tensor(torch.tensor(out))
