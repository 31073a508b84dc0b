// Several greedy decode steps of a few sequences in one call: the engine's multi-step decode
// (EngineConfig.num_decode_steps). Each step is the one the engine's Python path runs, op for
// op (the same C++ ops, through the dispatcher): the embedding rows of the step's tokens, RoPE
// rows of their positions, torch.ops.sagellm.decoder_layers, final_logits, argmax_rows; the
// argmax is the next step's token. So the tokens are the bits the one-step path gives; only
// the Python between steps (the plan, the inputs, the sampler's bookkeeping: ~1.5 ms of a
// 13-16 ms batch-1 bf16 step on the 2-core Zen 3 VM) is gone.
//
// Registered as torch.ops.sagellm.decode_burst(ids, positions, block_table, steps, stop_ids,
// embed, weights, kv, cos_table, sin_table, num_heads, eps, scale, gemv_max_rows,
// transposed_min_rows, transposed_max_rows, packed_min_rows, norm_w, lm_head, lm_use,
// out_tokens, out_s) -> int. Shapes (int64 unless said):
//   ids, positions [B]           each sequence's pending token and its position
//   block_table [B, max_blocks]  each sequence's blocks, allocated for positions up to
//                                positions + steps - 1 (checked; the rest of a row: -1)
//   stop_ids [B, S]              tokens that finish each sequence (-1: none)
//   embed [V, hidden], cos_table / sin_table [P > max position, D] (the dtype's RoPE rows),
//   weights, kv, num_heads .. packed_min_rows: as decoder_layers takes them
//   norm_w, lm_head, lm_use      final_logits' norm_w, lm_head and packed (empty: the GEMV)
//   out_tokens [B, steps]        written: the token each step picked, per sequence
//   out_s [steps] float64        written: seconds from the call's start to each step's tokens
// Returns the steps run: `steps`, or fewer when a sequence picked one of its stop_ids (the
// burst ends with that step; the others' tokens of it are kept too).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <chrono>
#include <cstdint>
#include <vector>

namespace {

const c10::TypedOperatorHandle<void(
    at::Tensor, at::TensorList, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, at::TensorList, at::TensorList, at::TensorList, at::TensorList,
    at::IntArrayRef, int64_t, double, double, int64_t, int64_t, int64_t, int64_t)>&
layers_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("sagellm::decoder_layers", "")
          .typed<void(at::Tensor, at::TensorList, const at::Tensor&, const at::Tensor&,
                      const at::Tensor&, const at::Tensor&, at::TensorList, at::TensorList,
                      at::TensorList, at::TensorList, at::IntArrayRef, int64_t, double, double,
                      int64_t, int64_t, int64_t, int64_t)>();
  return op;
}

const c10::TypedOperatorHandle<void(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    double, const at::Tensor&, const at::Tensor&, at::Tensor)>&
logits_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("sagellm::final_logits", "")
          .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                      const at::Tensor&, const at::Tensor&, at::Tensor)>();
  return op;
}

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&)>& argmax_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("sagellm::argmax_rows", "")
                             .typed<at::Tensor(const at::Tensor&)>();
  return op;
}

void check_long(const at::Tensor& t, int64_t dim, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kLong && t.dim() == dim &&
                  t.is_contiguous(),
              "decode_burst: ", name, " a contiguous CPU int64 tensor of ", dim, " dims");
}

int64_t decode_burst(const at::Tensor& ids, const at::Tensor& positions,
                     const at::Tensor& block_table, int64_t steps, const at::Tensor& stop_ids,
                     const at::Tensor& embed, at::TensorList weights, const at::Tensor& kv,
                     const at::Tensor& cos_table, const at::Tensor& sin_table, int64_t num_heads,
                     double eps, double scale, int64_t gemv_max_rows, int64_t transposed_min_rows,
                     int64_t transposed_max_rows, int64_t packed_min_rows,
                     const at::Tensor& norm_w, const at::Tensor& lm_head,
                     const at::Tensor& lm_use, const at::Tensor& out_tokens,
                     const at::Tensor& out_s) {
  const auto t0 = std::chrono::steady_clock::now();
  check_long(ids, 1, "ids");
  check_long(positions, 1, "positions");
  check_long(block_table, 2, "block_table");
  check_long(stop_ids, 2, "stop_ids");
  check_long(out_tokens, 2, "out_tokens");
  const int64_t B = ids.size(0), max_blocks = block_table.size(1);
  TORCH_CHECK(B >= 1 && B <= 16, "decode_burst: 1..16 sequences (final_logits' rows), got ", B);
  TORCH_CHECK(positions.size(0) == B && block_table.size(0) == B && stop_ids.size(0) == B,
              "decode_burst: ids, positions, block_table and stop_ids with one row each of B = ",
              B, " sequences");
  TORCH_CHECK(steps >= 1 && out_tokens.size(0) == B && out_tokens.size(1) >= steps,
              "decode_burst: steps >= 1 and out_tokens [B, >= steps]");
  TORCH_CHECK(out_s.scalar_type() == at::kDouble && out_s.dim() == 1 && out_s.size(0) >= steps &&
                  out_s.is_contiguous(),
              "decode_burst: out_s a contiguous float64 [>= steps] tensor");
  TORCH_CHECK(embed.dim() == 2 && embed.is_contiguous() && kv.dim() == 6,
              "decode_burst: embed [V, hidden] and kv [L, 2, N, kvH, bs, D]");
  const int64_t kvH = kv.size(3), bs = kv.size(4), num_blocks = kv.size(2);
  const int64_t* pos0 = positions.data_ptr<int64_t>();
  const int64_t* table = block_table.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t last = pos0[b] + steps - 1;
    TORCH_CHECK(pos0[b] >= 0 && last < max_blocks * bs && last < cos_table.size(0),
                "decode_burst: sequence ", b, "'s positions ", pos0[b], "..", last,
                " past its block_table row or the RoPE table");
    for (int64_t j = 0; j <= last / bs; ++j)
      TORCH_CHECK(table[b * max_blocks + j] >= 0 && table[b * max_blocks + j] < num_blocks,
                  "decode_burst: block_table[", b, ", ", j, "] = ", table[b * max_blocks + j],
                  " is not a block of the cache [0, ", num_blocks, ") (positions ", pos0[b],
                  "..", last, " need blocks 0..", last / bs, ")");
  }
  const at::TensorOptions i64 = ids.options();
  at::Tensor cur = ids.clone(), pos = positions.clone();
  const at::Tensor rows = at::arange(B, i64), q_lens = at::ones({B}, i64);
  const at::Tensor flat_table = block_table.reshape({-1});
  const std::vector<int64_t> mb{max_blocks};
  at::Tensor kv_rows = at::empty({B * kvH}, i64);
  at::Tensor logits = at::empty({B, lm_head.size(0)}, lm_head.options().dtype(at::kFloat));
  int64_t* tok = out_tokens.data_ptr<int64_t>();
  const int64_t tok_stride = out_tokens.size(1), S = stop_ids.size(1);
  const int64_t* stop = stop_ids.data_ptr<int64_t>();
  double* when = out_s.data_ptr<double>();
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t* p = pos.data_ptr<int64_t>();
    int64_t* r = kv_rows.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < kvH; ++h)
        r[b * kvH + h] = (table[b * max_blocks + p[b] / bs] * kvH + h) * bs + p[b] % bs;
    const at::Tensor x = embed.index_select(0, cur);
    const at::Tensor cos = cos_table.index_select(0, pos), sin = sin_table.index_select(0, pos);
    layers_op().call(x, weights, kv, cos, sin, kv_rows, {flat_table}, {rows}, {q_lens}, {pos}, mb,
                     num_heads, eps, scale, gemv_max_rows, transposed_min_rows,
                     transposed_max_rows, packed_min_rows);
    logits_op().call(x, rows, norm_w, eps, lm_head, lm_use, logits);
    cur = argmax_op().call(logits);
    const int64_t* c = cur.data_ptr<int64_t>();
    bool stopped = false;
    for (int64_t b = 0; b < B; ++b) {
      tok[b * tok_stride + s] = c[b];
      for (int64_t j = 0; j < S; ++j) stopped |= stop[b * S + j] == c[b];
    }
    when[s] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (stopped) return s + 1;
    pos = pos + 1;
  }
  return steps;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sagellm, m) {
  m.def(
      "decode_burst(Tensor ids, Tensor positions, Tensor block_table, int steps, "
      "Tensor stop_ids, Tensor embed, Tensor[] weights, Tensor(a!) kv, Tensor cos_table, "
      "Tensor sin_table, int num_heads, float eps, float scale, int gemv_max_rows, "
      "int transposed_min_rows, int transposed_max_rows, int packed_min_rows, Tensor norm_w, "
      "Tensor lm_head, Tensor lm_use, Tensor(b!) out_tokens, Tensor(c!) out_s) -> int");
}

TORCH_LIBRARY_IMPL(sagellm, CPU, m) { m.impl("decode_burst", &decode_burst); }

// packed weights may be oneDNN tensors, whose dispatch key outranks CPU
TORCH_LIBRARY_IMPL(sagellm, MkldnnCPU, m) { m.impl("decode_burst", &decode_burst); }
