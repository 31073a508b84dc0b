"""The Llama / Qwen2 / Qwen3 decoder as plain tensor code over the paged KV cache.

Weights are fused per layer (q|k|v into one matrix, gate|up into one) so a layer is four GEMMs
over all of the step's tokens at once. Numerics follow HF transformers: RMSNorm in fp32 then
cast, RoPE cos/sin computed in fp32 and cast to the model dtype, logits in fp32.

Tensor parallelism: given a :class:`~sagellm.engines.native.tp_shard.TPShard` the model keeps
only that rank's heads and intermediate columns (see ``tp_shard``), its KV cache holds only its
KV heads, and ``o`` / ``down`` go through ``row_parallel`` (a partial GEMM plus the all-reduce
that sums the ranks' partials, ``tp_group.RowParallel``); their biases are added once, after
the sum. Without a shard the forward is exactly the single-process one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sagellm.core.errors import ModelLoadError
from sagellm.engines.native.arch import ModelArch
from sagellm.engines.native.attention import (
    KERNEL_MAX_Q,
    AttnMetadata,
    Workspace,
    paged_attention,
)
from sagellm.engines.native.kernels import (
    decode_burst_op,
    decoder_layer_halves_op,
    decoder_layers_op,
    final_logits_op,
    rms_norm_op,
)
from sagellm.engines.native.kv_cache import PagedKVCache, quantize_kv
from sagellm.engines.native.linear import (
    Weight,
    linear,
    linear_rows,
    pack_weight,
    packed_min_rows,
    takes_gemv,
)
from sagellm.engines.native.tp_shard import TPShard

LINEAR_FIELDS = ("qkv", "o", "gate_up", "down")
LAYER_WEIGHTS = 12  # tensors per layer in the C++ layer ops' weight list (_fused_weight_list)


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    qkv: Weight  # [(H + 2 * kvH) * D, hidden]
    qkv_bias: torch.Tensor | None
    q_norm: torch.Tensor | None  # Qwen3
    k_norm: torch.Tensor | None
    o: Weight
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor
    gate_up: Weight  # [2 * I, hidden]
    down: Weight


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _final_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """The model's last RMSNorm: the C++ row kernel the layers use (one op, no parallel
    region for a few rows) on CPU, else :func:`_rms_norm`. Between two weight streams each
    torch op of a decode step runs with cold caches (measured on 2 Zen 4 cores, batch 1:
    ``_rms_norm``'s four ops 0.21 ms per step there vs 22 us in a tight loop)."""
    op = rms_norm_op() if x.device.type == "cpu" and x.dim() == 2 else None
    if op is None or w.dtype != x.dtype or x.dtype not in (torch.float32, torch.bfloat16):
        return _rms_norm(x, w, eps)
    return op(x.contiguous(), w.contiguous(), eps)


FINAL_LOGITS_MAX_ROWS = 16  # csrc/final_logits.cpp's limit
BURST_MAX_SEQS = FINAL_LOGITS_MAX_ROWS  # csrc/decode_burst.cpp's (its final_logits call)


def _final_logits(x, rows: torch.Tensor, norm, eps: float, lm_head: Weight, packed) -> torch.Tensor:
    """fp32 logits of ``x[rows]`` through the final norm and lm_head: one C++ op (the same
    kernels, so the same bits) where ``linear`` would take the GEMV or our packed GEMM for at
    most ``FINAL_LOGITS_MAX_ROWS`` rows, else three torch ops."""
    op = final_logits_op() if x.device.type == "cpu" else None  # never builds them on CUDA
    n = rows.shape[0]
    use = final_logits_product(x, n, norm, lm_head, packed) if op is not None else None
    if use is not None and rows.dtype == torch.int64:
        out = torch.empty((n, lm_head.shape[0]), dtype=torch.float32)
        op(x.contiguous(), rows, norm.contiguous(), eps, lm_head.contiguous(), use, out)
        return out
    return linear(_final_norm(x[rows], norm, eps), lm_head, None, packed).float()


def final_logits_product(x, n: int, norm, lm_head: Weight, packed) -> torch.Tensor | None:
    """The ``packed`` argument of csrc/final_logits.cpp for ``n`` rows of ``x`` (an empty
    tensor: the GEMV; ``packed``: our packed GEMM), or None where ``linear`` would take
    another path for them (then the op does not serve the step)."""
    if n > FINAL_LOGITS_MAX_ROWS or norm.dtype != x.dtype:
        return None
    if not isinstance(lm_head, torch.Tensor) or lm_head.dtype != x.dtype:
        return None
    if takes_gemv(x, lm_head, n, packed):
        return x.new_empty(0)
    if packed is not None and not packed.is_mkldnn and n >= packed_min_rows(packed):
        return packed
    return None


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def _write_kv(cache: torch.Tensor, meta: AttnMetadata, x: torch.Tensor) -> None:
    """Scatter new K or V rows ``x`` [T, kvH, D] into ``cache`` [blocks, kvH, bs, D] (an int8
    cache stores each row quantized with its scale, see ``kv_cache``)."""
    if cache.dtype == torch.int8:
        x = quantize_kv(x)
    cache.view(-1, cache.shape[-1]).index_copy_(0, meta.kv_rows, x.reshape(-1, x.shape[-1]))


def _num_bytes(w: Weight) -> int:
    return w.numel() * w.element_size() if isinstance(w, torch.Tensor) else w.num_bytes


class DecoderModel:
    """Holds the weights; ``forward`` runs one batched step for all scheduled tokens."""

    def __init__(
        self,
        arch: ModelArch,
        state_dict: dict[str, torch.Tensor],
        dtype: torch.dtype,
        device: torch.device,
        shard: TPShard | None = None,
    ) -> None:
        self.arch, self.dtype, self.device = arch, dtype, device
        self.shard = shard
        # heads this process computes (all of them without a shard)
        self.num_heads = shard.num_heads if shard else arch.num_heads
        self.num_kv_heads = shard.num_kv_heads if shard else arch.num_kv_heads
        # set by the TP group: ``row_parallel(x, w) -> sum over ranks of x @ w.T`` [T, hidden]
        self.row_parallel = None
        sd = state_dict
        D = arch.head_dim
        # rows (dim 0) or columns (dim 1) of each sharded tensor this rank keeps
        cuts: dict[str, tuple[int, int, int]] = {}
        if shard is not None:
            (h0, h1), (k0, k1), (f0, f1) = shard.heads, shard.kv_heads, shard.ffn
            cuts = {
                "q_proj": (0, h0 * D, h1 * D),
                "k_proj": (0, k0 * D, k1 * D),
                "v_proj": (0, k0 * D, k1 * D),
                "o_proj.weight": (1, h0 * D, h1 * D),
                "gate_proj": (0, f0, f1),
                "up_proj": (0, f0, f1),
                "down_proj": (1, f0, f1),
            }

        def take(name: str, required: bool = True) -> torch.Tensor | None:
            t = sd.get(name)
            if t is None:
                if required:
                    raise ModelLoadError(f"checkpoint lacks tensor {name!r}")
                return None
            for key, (dim, lo, hi) in cuts.items():
                if key in name and name.startswith("model.layers."):
                    t = t.narrow(dim, lo, hi - lo)
            return t.to(device=device, dtype=dtype).contiguous()

        def cat(names: list[str], required: bool = True) -> torch.Tensor | None:
            parts = [take(n, required) for n in names]
            if any(p is None for p in parts):
                return None
            return torch.cat(parts, dim=0).contiguous()

        self.embed = take("model.embed_tokens.weight")
        self.norm = take("model.norm.weight")
        lm = take("lm_head.weight", required=not arch.tie_word_embeddings)
        self.lm_head = lm if lm is not None else self.embed
        self.layers: list[LayerWeights] = []
        for i in range(arch.num_layers):
            p = f"model.layers.{i}."
            a, m = p + "self_attn.", p + "mlp."
            qkv = [a + "q_proj", a + "k_proj", a + "v_proj"]
            self.layers.append(
                LayerWeights(
                    input_norm=take(p + "input_layernorm.weight"),
                    qkv=cat([n + ".weight" for n in qkv]),
                    qkv_bias=cat([n + ".bias" for n in qkv], required=False),
                    q_norm=take(a + "q_norm.weight", required=arch.qk_norm),
                    k_norm=take(a + "k_norm.weight", required=arch.qk_norm),
                    o=take(a + "o_proj.weight"),
                    o_bias=take(a + "o_proj.bias", required=False),
                    post_norm=take(p + "post_attention_layernorm.weight"),
                    gate_up=cat([m + "gate_proj.weight", m + "up_proj.weight"]),
                    down=take(m + "down_proj.weight"),
                )
            )
        if any(k.startswith("model.layers.") and k.endswith("mlp.gate_proj.bias") for k in sd):
            raise ModelLoadError("mlp_bias=true checkpoints are not supported yet")
        self.scale = arch.head_dim**-0.5
        self._rope_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.workspace = Workspace()
        self._no_bias = torch.empty(0, dtype=dtype, device=device)
        self._weight_bytes: tuple | None = None  # (layers, packed, bytes), see num_weight_bytes
        # ``pack_weight`` copies by ``linear_weights`` name (empty where packing does not apply);
        # a layer-subset view shares it (its layer i is this model's layer i)
        self.packed: dict[str, torch.Tensor] = {}
        self._fused_weights: tuple | None = None  # (layers, packed, list or None), see below
        for name, w in self.linear_weights().items():
            pw = pack_weight(w, dtype)
            if pw is not None:
                self.packed[name] = pw

    @property
    def num_weight_bytes(self) -> int:
        """Bytes of the linear weights and lm_head: what a batch-1 decode step streams.

        Counted once per (layer list, packed dict), like the one-call decoder's weight list
        (every step's metrics ask for it): ``replace_linear`` makes a new packed dict, and a
        layer-subset or quantized view of this model has its own layer list."""
        memo = self._weight_bytes
        if memo is None or memo[0] is not self.layers or memo[1] is not self.packed:
            n = sum(_num_bytes(w) for w in self.linear_weights().values())
            memo = self._weight_bytes = (self.layers, self.packed, n)
        return memo[2]

    def linear_weights(self) -> dict[str, Weight]:
        """Every linear weight by name: ``layers.<i>.<qkv|o|gate_up|down>`` and ``lm_head``."""
        out: dict[str, Weight] = {
            f"layers.{i}.{f}": getattr(lw, f)
            for i, lw in enumerate(self.layers)
            for f in LINEAR_FIELDS
        }
        out["lm_head"] = self.lm_head
        return out

    def replace_linear(self, name: str, weight: Weight) -> None:
        """Swap one weight named as in ``linear_weights`` (quantization does this at load)."""
        # a new dict (the memos above key on it): a view made by copy.copy shares the old one
        self.packed = {k: v for k, v in self.packed.items() if k != name}
        pw = pack_weight(weight, self.dtype)
        if pw is not None:
            self.packed[name] = pw
        if name == "lm_head":
            self.lm_head = weight
            return
        _, i, field = name.split(".")
        setattr(self.layers[int(i)], field, weight)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self._rope_tables(int(positions.max()) + 1)
        return cos[positions][:, None, :], sin[positions][:, None, :]

    def _rope_tables(self, need: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The cos and sin rows [P >= need, D] of positions 0..P-1 (scaled, in the dtype),
        grown (doubling, at least 4096) when ``need`` passes them."""
        if self._rope_cache is None or self._rope_cache[0].shape[0] < need:
            n = max(need, 4096, 2 * (self._rope_cache[0].shape[0] if self._rope_cache else 0))
            t = torch.arange(n, dtype=torch.int64, device=self.device).float()
            freqs = t[:, None] * self.arch.inv_freq.to(self.device)[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            s = self.arch.rope_attention_scaling
            self._rope_cache = (
                (emb.cos() * s).to(self.dtype),
                (emb.sin() * s).to(self.dtype),
            )
        return self._rope_cache

    def _fused_layers(self, meta: AttnMetadata, cache: PagedKVCache):
        """``(decoder_layers op, its weight list)`` when this step can run every layer in one
        C++ call (csrc/decoder_layers.cpp), else None: it needs the layer halves
        (``_layer_halves``) and attention groups the in-place kernel serves (plain causal, at
        most ``KERNEL_MAX_Q`` queries per sequence: decode, verify, short chunks)."""
        if self._layer_halves(cache) is None:
            return None
        if not all(
            g.causal_only and g.sparse is None and g.max_q <= KERNEL_MAX_Q for g in meta.groups
        ):
            return None
        op = decoder_layers_op()
        return None if op is None else (op, self._fused_weights[2])

    def _layer_halves(self, cache: PagedKVCache):
        """``(decoder_layer_in, decoder_layer_out, weight list)`` when each layer's work around
        attention can run as two C++ calls (csrc/decoder_layers.cpp), else None: it needs the
        CPU kernels, one process (no TP), dense weights and cache in the model's dtype and no
        Qwen3 q/k norms."""
        if self.device.type != "cpu" or self.row_parallel is not None:
            return None
        if cache.kv.dtype != self.dtype or not linear_rows(self.dtype):
            return None
        ops = decoder_layer_halves_op()
        if ops is None:
            return None
        memo = self._fused_weights
        if memo is None or memo[0] is not self.layers or memo[1] is not self.packed:
            memo = self._fused_weights = (self.layers, self.packed, self._fused_weight_list())
        return (*ops, memo[2]) if memo[2] is not None else None

    def _fused_weight_list(self) -> list[torch.Tensor] | None:
        """The op's 12 tensors per layer (see csrc/decoder_layers.cpp), or None when a layer has
        q/k norms or a quantized linear. Built once per (layer list, packed dict): the layer
        records change only through ``replace_linear``, which makes a new packed dict."""
        none, packed = self._no_bias, self.packed
        weights: list[torch.Tensor] = []
        for i, lw in enumerate(self.layers):
            if lw.q_norm is not None:
                return None
            layer = (lw.input_norm, lw.qkv, lw.qkv_bias, lw.o, lw.o_bias, lw.post_norm)
            weights += (none if t is None else t for t in layer)
            weights += (lw.gate_up, lw.down)
            weights += (packed.get(f"layers.{i}.{f}", none) for f in LINEAR_FIELDS)
        if not all(isinstance(t, torch.Tensor) and t.dtype == self.dtype for t in weights):
            return None  # a quantized linear
        return weights

    @torch.inference_mode()
    def decode_burst(
        self,
        cache: PagedKVCache,
        ids: list[int],
        positions: list[int],
        tables: list[list[int]],
        steps: int,
        stops: list[list[int]],
    ) -> tuple[list[list[int]], list[float]] | None:
        """Up to ``steps`` greedy decode steps of B sequences in one C++ call
        (csrc/decode_burst.cpp: each step this forward's ops): ``ids``/``positions`` their
        pending tokens and positions, ``tables`` their blocks (covering ``steps`` positions),
        ``stops`` the tokens that end each. Returns ``(tokens [B][n], seconds from the call to
        each step's tokens [n])``, n <= steps (fewer when a sequence picked a stop token), or
        None where the C++ path does not serve this model or batch (nothing computed)."""
        op = decode_burst_op()
        halves = self._layer_halves(cache) if op is not None else None
        B = len(ids)
        if halves is None or B > BURST_MAX_SEQS:
            return None
        use = final_logits_product(
            self.embed, B, self.norm, self.lm_head, self.packed.get("lm_head")
        )
        if use is None:
            return None
        cos_table, sin_table = self._rope_tables(max(positions) + steps)
        width = max(len(t) for t in tables)
        width_stops = max(1, max(len(st) for st in stops))
        out_tokens = torch.empty((B, steps), dtype=torch.int64)
        out_s = torch.empty(steps, dtype=torch.float64)
        n = op(
            torch.tensor(ids, dtype=torch.int64),
            torch.tensor(positions, dtype=torch.int64),
            torch.tensor([t + [-1] * (width - len(t)) for t in tables], dtype=torch.int64),
            steps,
            torch.tensor([st + [-1] * (width_stops - len(st)) for st in stops], dtype=torch.int64),
            self.embed,
            halves[2],
            cache.kv,
            cos_table,
            sin_table,
            self.num_heads,
            self.arch.rms_norm_eps,
            self.scale,
            *linear_rows(self.dtype),
            self.norm,
            self.lm_head,
            use,
            out_tokens,
            out_s,
        )
        return out_tokens[:, :n].tolist(), out_s[:n].tolist()

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttnMetadata,
        cache: PagedKVCache,
        logits_index: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """Run all new tokens [T] through the model, writing their K/V into ``cache``.

        Returns fp32 logits [len(logits_index), vocab] for the rows in ``logits_index`` (None
        when ``logits_index`` is None: a TP worker rank, which never samples).
        """
        arch, tp = self.arch, self.row_parallel
        H, kvH, D, eps = self.num_heads, self.num_kv_heads, arch.head_dim, arch.rms_norm_eps
        T = input_ids.shape[0]
        cos, sin = self._rope(positions)
        x = F.embedding(input_ids, self.embed)
        fused = self._fused_layers(meta, cache)
        halves = None if fused is not None else self._layer_halves(cache)
        packed = self.packed
        rows = linear_rows(self.dtype) if fused is not None or halves is not None else ()
        if fused is not None:
            op, weights = fused
            groups = meta.groups
            op(
                x,
                weights,
                cache.kv,
                cos[:, 0],
                sin[:, 0],
                meta.kv_rows,
                [g.block_ids for g in groups],
                [g.q_starts for g in groups],
                [g.q_lens for g in groups],
                [g.num_computed for g in groups],
                [g.max_blocks for g in groups],
                H,
                eps,
                self.scale,
                *rows,
            )
        elif halves is not None:
            layer_in, layer_out, weights = halves
            cos_rows, sin_rows = cos[:, 0], sin[:, 0]  # [T, D]
            for i in range(len(self.layers)):
                w = weights[i * LAYER_WEIGHTS : (i + 1) * LAYER_WEIGHTS]
                k_cache, v_cache = cache.layer(i)
                q = layer_in(
                    x, w, k_cache, v_cache, cos_rows, sin_rows, meta.kv_rows, H, eps, *rows
                )
                attn = paged_attention(q, k_cache, v_cache, meta, self.scale, self.workspace, i)
                layer_out(x, attn, w, eps, *rows)
        for i, lw in enumerate(self.layers if fused is None and halves is None else ()):
            h = _rms_norm(x, lw.input_norm, eps)
            qkv = linear(h, lw.qkv, lw.qkv_bias, packed.get(f"layers.{i}.qkv"))
            q = qkv[:, : H * D].view(T, H, D)
            k = qkv[:, H * D : (H + kvH) * D].view(T, kvH, D)
            v = qkv[:, (H + kvH) * D :].view(T, kvH, D)
            if lw.q_norm is not None:
                q = _rms_norm(q, lw.q_norm, eps)
                k = _rms_norm(k, lw.k_norm, eps)
            q = _rotate(q, cos, sin)
            k = _rotate(k, cos, sin)
            k_cache, v_cache = cache.layer(i)
            _write_kv(k_cache, meta, k)
            _write_kv(v_cache, meta, v)
            attn = paged_attention(q, k_cache, v_cache, meta, self.scale, self.workspace, i)
            if tp is None:
                x = x + linear(attn.view(T, H * D), lw.o, lw.o_bias, packed.get(f"layers.{i}.o"))
            else:
                y = tp(attn.view(T, H * D), lw.o)
                x = x + (y if lw.o_bias is None else y + lw.o_bias)
            h = _rms_norm(x, lw.post_norm, eps)
            gu = linear(h, lw.gate_up, None, packed.get(f"layers.{i}.gate_up"))
            g, u = gu.chunk(2, dim=-1)
            a = F.silu(g) * u
            x = x + (
                linear(a, lw.down, None, packed.get(f"layers.{i}.down"))
                if tp is None
                else tp(a, lw.down)
            )
        if logits_index is None:
            return None
        return _final_logits(x, logits_index, self.norm, eps, self.lm_head, packed.get("lm_head"))
