"""The vLLM side of the adapter: runs in the vLLM virtual environment, never in sagellm's.

Started as ``<vllm venv python> worker_main.py``; imports only the standard library and vllm.
Protocol: one JSON object per line on stdin, one JSON reply per line on the protocol stream
(a duplicate of the original stdout; vLLM's own prints go to stderr). Replies are
``{"ok": true, ...}`` or ``{"ok": false, "error": str, "kind": "invalid_request"|"internal"}``;
a failed op leaves the engine serving. Ops: ``init``, ``add``, ``step`` (with the strategy's
ranking of request ids), ``abort``, ``shutdown``.

The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the scheduler
plugin below (vLLM's ``scheduler_cls`` hook) sees the ranking: before each ``schedule`` it
reorders the waiting queue by it (unranked requests keep their FCFS place after the ranked
ones) and records the order requests leave the waiting queue (admission order); it also counts
the KV cache events (blocks stored in / removed from the prefix cache) vLLM publishes.
"""

import json
import os
import sys
import time

RANKS = {}  # request id -> position in the sagellm strategy's ranking (0 = first)
STEP_LOG = {"admitted": [], "num_prefill_tokens": 0, "num_decode_tokens": 0, "num_seqs": 0}
# KV cache events vLLM published so far, in blocks (BlockStored / BlockRemoved) and clears
KV_EVENTS = {"kv_blocks_stored": 0, "kv_blocks_removed": 0, "kv_all_cleared": 0}


class CountingPublisher:
    """Wraps vLLM's KV event publisher: counts each batch's events, then passes it on."""

    def __init__(self, inner):
        self.inner = inner

    def publish(self, batch):
        for e in batch.events:
            kind = type(e).__name__
            if kind == "BlockStored":
                KV_EVENTS["kv_blocks_stored"] += len(e.block_hashes)
            elif kind == "BlockRemoved":
                KV_EVENTS["kv_blocks_removed"] += len(e.block_hashes)
            elif kind == "AllBlocksCleared":
                KV_EVENTS["kv_all_cleared"] += 1
        self.inner.publish(batch)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def external_id(internal_id):
    """vLLM appends ``-<8 hex>`` to the caller's request id inside the engine core."""
    return internal_id.rsplit("-", 1)[0]


def make_scheduler_cls():
    from vllm.v1.core.sched.scheduler import Scheduler

    class RankedScheduler(Scheduler):
        """vLLM's scheduler taking its waiting order from sagellm (a ``scheduler_cls`` plugin)
        and counting the KV cache events it publishes."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.kv_event_publisher = CountingPublisher(self.kv_event_publisher)

        def schedule(self, *args, **kwargs):
            if RANKS and len(self.waiting) > 1:
                queued = list(self.waiting)
                far = len(RANKS)
                queued.sort(
                    key=lambda r: RANKS.get(external_id(r.request_id), far)
                )  # stable: FCFS ties
                self.waiting.clear()
                for r in queued:
                    self.waiting.append(r)
            before = {
                r.request_id: (r.num_computed_tokens, r.num_prompt_tokens)
                for r in list(self.waiting) + list(self.running)
            }
            out = super().schedule(*args, **kwargs)
            STEP_LOG["admitted"] = [external_id(n.req_id) for n in out.scheduled_new_reqs]
            prefill = decode = 0
            for rid, n in out.num_scheduled_tokens.items():
                done, prompt = before.get(rid, (0, 1))
                if done >= prompt:
                    decode += n
                else:
                    prefill += n
            STEP_LOG.update(
                num_prefill_tokens=prefill,
                num_decode_tokens=decode,
                num_seqs=len(out.num_scheduled_tokens),
            )
            return out

    return RankedScheduler


class Worker:
    def __init__(self):
        self.engine = None
        self.vocab_size = 0
        self.admission_log = []

    def init(self, msg):
        from vllm import EngineArgs, LLMEngine
        from vllm.config import KVEventsConfig

        args = EngineArgs(
            model=msg["model"],
            dtype=msg["dtype"],
            block_size=msg["block_size"],
            num_gpu_blocks_override=msg.get("num_gpu_blocks"),
            max_num_seqs=msg["max_num_seqs"],
            max_num_batched_tokens=msg["max_num_batched_tokens"],
            max_model_len=msg.get("max_model_len"),
            enable_prefix_caching=msg["enable_prefix_caching"],
            enable_chunked_prefill=msg["enable_chunked_prefill"],
            seed=msg["seed"],
            enforce_eager=True,
            skip_tokenizer_init=True,
            scheduler_cls=make_scheduler_cls(),
            kv_cache_memory_bytes=msg.get("kv_cache_bytes"),
            gpu_memory_utilization=msg["memory_fraction"],  # on CPU: share of RAM reserved
            # events of the prefix cache, published to nothing but counted by the plugin
            kv_events_config=KVEventsConfig(enable_kv_cache_events=True, publisher="null"),
        )
        self.engine = LLMEngine.from_engine_args(args)
        cfg = self.engine.model_config
        self.vocab_size = cfg.get_vocab_size()
        import vllm

        return {
            "vllm_version": vllm.__version__,
            "vocab_size": self.vocab_size,
            "max_model_len": cfg.max_model_len,
        }

    def add(self, msg):
        from vllm import SamplingParams

        ids = msg["prompt_token_ids"]
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(
                f"prompt_token_ids: {bad[:3]} outside the vocabulary [0, {self.vocab_size})"
            )
        sp = SamplingParams(
            max_tokens=msg["max_tokens"],
            temperature=msg["temperature"],
            top_p=msg["top_p"],
            top_k=msg["top_k"] or 0,
            seed=msg["seed"],
            ignore_eos=msg["ignore_eos"],
            stop_token_ids=msg["stop_token_ids"],
            detokenize=False,
        )
        self.engine.add_request(
            msg["request_id"], {"prompt_token_ids": ids}, sp, priority=msg.get("priority", 0)
        )
        return {}

    def step(self, msg):
        RANKS.clear()
        RANKS.update({rid: i for i, rid in enumerate(msg.get("ranking", []))})
        STEP_LOG.update(admitted=[], num_prefill_tokens=0, num_decode_tokens=0, num_seqs=0)
        start = time.perf_counter()
        outs = self.engine.step()
        step_s = time.perf_counter() - start
        self.admission_log.extend(STEP_LOG["admitted"])
        res = []
        for o in outs:
            c = o.outputs[0]
            res.append(
                {
                    "request_id": o.request_id,
                    "token_ids": list(c.token_ids),
                    "finished": o.finished,
                    "finish_reason": c.finish_reason,
                    "num_cached_tokens": o.num_cached_tokens or 0,
                }
            )
        return {
            "outputs": res,
            "step_s": step_s,
            "admitted": STEP_LOG["admitted"],
            "num_prefill_tokens": STEP_LOG["num_prefill_tokens"],
            "num_decode_tokens": STEP_LOG["num_decode_tokens"],
            "num_seqs": STEP_LOG["num_seqs"],
            "kv_events": dict(KV_EVENTS),
            "has_unfinished": self.engine.has_unfinished_requests(),
        }

    def abort(self, msg):
        self.engine.abort_request([msg["request_id"]])
        return {}


def main():
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker()
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "shutdown":
            proto.write(json.dumps({"ok": True}) + "\n")
            break
        try:
            reply = {"ok": True, **getattr(worker, op)(msg)}
        except (ValueError, TypeError) as e:
            reply = {"ok": False, "kind": "invalid_request", "error": f"{type(e).__name__}: {e}"}
        except Exception as e:  # the engine keeps serving; the client decides
            reply = {"ok": False, "kind": "internal", "error": f"{type(e).__name__}: {e}"}
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    main()
