// Linear layers over a weight packed once, on AVX-512 and AVX2 CPUs:
// out[M, N] = x[M, K] . w[N, K]^T (+ bias), fp32 sums, each output rounded once to the dtype.
//
// Registered (where the compiler targets AVX-512F, or AVX2 with FMA) as
//   torch.ops.sagellm.pack_gemm(w) -> wp           w [N, K], N % 16 == 0, K % P == 0
//   torch.ops.sagellm.gemm_packed(x, wp, bias, out) x [M, K], bias [N] or empty, out [M, N]
//   torch.ops.sagellm.gemm_packed_dtypes() -> the dtype names served: float32, and bfloat16
//                                             with AVX2 or AVX512-BF16
//   torch.ops.sagellm.gemm_packed_min_rows() -> the fewest rows linear.py gives it: 1 on AVX2
//                                               (tile_row), 2 on AVX-512 (1 row: the GEMV)
// P is the inputs one 32-bit lane holds: 1 for float32, 2 for bfloat16. wp is
// [N / 16, K / P, 16 P]: for each 16 output columns, the K / P groups (w[n, P k .. P k + P - 1])
// of its 16 columns side by side, 64 bytes per group of inputs, so a step's GEMMs never reorder
// a weight. The register tile is the ISA's (gemm_tile_avx512.h: 8 rows x 48 columns;
// gemm_tile_avx2.h: 6 rows x 16 columns); it keeps its accumulators in registers over all of K.
// Threads split the column panels, the tail of the split stolen (steal_split.h).
//
// Measured against oneDNN's GEMM on its own prepacked weight (linear.pack_weight, hint 64 rows),
// SmolLM2-135M's four layer shapes x 30 layers, alone on 2 Zen 4 cores, ms (oneDNN / ours):
//   bf16: 2 rows 17.0 / 9.0, 16 rows 18.6 / 13.0, 64 rows (a decode step of 64 sequences)
//         48.6 / 38.0, 256 rows 156 / 136, 2,048 rows (a prefill step) 1,252 / 1,142;
//   fp32: 8 rows 27.5 / 16.4, 64 rows 95-116 / 77-90, 128-512 rows level (e.g. 512 rows
//         637 / 623), 1,024 and 2,048 rows 3-5% slower (1,037 / 1,066, 2,087 / 2,188).
// In the engine (alternating processes, fp32 W2: 64 x 1,088-token prompts with a shared
// prefix, 64 decode rows a step) that is a 7-12% lower TPOT and a level wall time.
//
// Numerics: fp32 sums each output's K products in order, in one accumulator; bf16 sums exact
// products of pairs in fp32. Both orders differ from oneDNN's and torch's, so results agree to
// fp32 rounding (before bf16's one rounding), not bitwise.
#include "ops.h"
#include "steal_split.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include "gemm_tile_avx512.h"
#elif defined(SAGELLM_GEMM_PACKED)  // AVX2 with FMA (ops.h)
#include "gemm_tile_avx2.h"
#endif

#ifdef SAGELLM_GEMM_PACKED
namespace {

using sagellm_gemm::kPanels;
using sagellm_gemm::kRows;
using sagellm_gemm::tile;
using sagellm_gemm::XOf;

constexpr int64_t kCols = 16;  // output columns per panel

template <typename T>
constexpr int64_t kGroup = std::is_same_v<T, float> ? 1 : 2;  // inputs per 32-bit lane

template <typename T, int NP>
void rows_of_panel(const XOf<T>* x, int64_t M, int64_t K, const T* wp, int64_t Kg,
                   const float* bias, T* out, int64_t N) {
#ifdef SAGELLM_GEMM_ONE_ROW
  if (M == 1) return sagellm_gemm::tile_row<T>(x, wp, Kg, bias, out);
#endif
  int64_t m = 0;
  for (; m + kRows <= M; m += kRows) tile<T, kRows, NP>(x + m * K, K, wp, Kg, bias, out + m * N, N);
  if (M - m >= 4) {
    tile<T, 4, NP>(x + m * K, K, wp, Kg, bias, out + m * N, N);
    m += 4;
  }
  if (M - m >= 2) {
    tile<T, 2, NP>(x + m * K, K, wp, Kg, bias, out + m * N, N);
    m += 2;
  }
  if (M - m == 1) tile<T, 1, NP>(x + m * K, K, wp, Kg, bias, out + m * N, N);
}

// Rows go in blocks of kBlockRows, each block's x read from the caches by every panel: with all
// M rows at once, a prefill step's x (4,096 x 1,536 fp32: 25 MB for a down projection) came
// from DRAM once per panel
constexpr int64_t kBlockRows = 256;

template <typename T>
void run(const T* x, const T* w, const float* bias, T* out, int64_t M, int64_t N, int64_t K) {
  const int64_t Kg = K / kGroup<T>, NB = N / kCols, panels = (NB + kPanels - 1) / kPanels;
  std::vector<float> staged;
  for (int64_t m0 = 0; m0 < M; m0 += kBlockRows) {
    const int64_t mb = std::min(kBlockRows, M - m0);
    const XOf<T>* xb = sagellm_gemm::stage_x<T>(x + m0 * K, mb, K, staged);
    sagellm::parallel_for_stealing(panels, [&](int64_t p) {
      const int64_t nb = p * kPanels, np = std::min<int64_t>(kPanels, NB - nb);
      const T* wp = w + nb * K * kCols;
      const float* b = bias ? bias + nb * kCols : nullptr;
      T* o = out + m0 * N + nb * kCols;
      if constexpr (kPanels == 3) {
        if (np == 3) return rows_of_panel<T, 3>(xb, mb, K, wp, Kg, b, o, N);
        if (np == 2) return rows_of_panel<T, 2>(xb, mb, K, wp, Kg, b, o, N);
      }
      rows_of_panel<T, 1>(xb, mb, K, wp, Kg, b, o, N);
    });
  }
}

bool served(at::ScalarType t) {
  return (t == at::kFloat && sagellm_gemm::kServes<float>) ||
         (t == at::kBFloat16 && sagellm_gemm::kServes<at::BFloat16>);
}

int64_t group_of(at::ScalarType t) { return t == at::kFloat ? 1 : 2; }

// The dtypes this build serves, by name (gemm_packed_dtypes() and the error messages)
std::vector<std::string> served_names() {
  std::vector<std::string> d;
  if (served(at::kFloat)) d.push_back("float32");
  if (served(at::kBFloat16)) d.push_back("bfloat16");
  return d;
}

std::string served_list() {
  std::string out;
  for (const std::string& n : served_names()) out += (out.empty() ? "" : ", ") + n;
  return out + " (" + sagellm_gemm::kIsa + ")";
}

}  // namespace

namespace sagellm {

at::Tensor pack_gemm(const at::Tensor& w) {
  TORCH_CHECK(w.device().is_cpu() && w.dim() == 2, "pack_gemm: w a CPU [N, K] tensor");
  TORCH_CHECK(served(w.scalar_type()), "pack_gemm: w's dtype ", w.scalar_type(),
              " not served here; allowed: ", served_list());
  const int64_t N = w.size(0), K = w.size(1), P = group_of(w.scalar_type());
  TORCH_CHECK(N % kCols == 0 && N > 0,
              "pack_gemm: N (w.size(0)) a positive multiple of 16, got ", N);
  TORCH_CHECK(K % P == 0 && K > 0, "pack_gemm: K (w.size(1)) a positive multiple of ", P,
              " for ", w.scalar_type(), ", got ", K);
  const at::Tensor src = w.contiguous();
  const int64_t Kg = K / P, es = w.element_size();
  at::Tensor wp = at::empty({N / kCols, Kg, kCols * P}, w.options());
  const char* s = static_cast<const char*>(src.data_ptr());
  char* d = static_cast<char*>(wp.data_ptr());
  at::parallel_for(0, N / kCols, 1, [&](int64_t b, int64_t e) {
    for (int64_t nb = b; nb < e; ++nb)
      for (int64_t g = 0; g < Kg; ++g)
        for (int64_t c = 0; c < kCols; ++c)
          std::memcpy(d + (((nb * Kg + g) * kCols + c) * P) * es,
                      s + ((nb * kCols + c) * K + g * P) * es, P * es);
  });
  return wp;
}

void gemm_packed(const at::Tensor& x, const at::Tensor& wp, const at::Tensor& bias,
                 at::Tensor& out) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous() &&
                  served(x.scalar_type()),
              "gemm_packed: x a contiguous CPU [M, K] tensor of a served dtype (", served_list(),
              ")");
  const at::ScalarType t = x.scalar_type();
  const int64_t P = group_of(t);
  TORCH_CHECK(wp.dim() == 3 && wp.size(2) == kCols * P && wp.is_contiguous() &&
                  wp.scalar_type() == t,
              "gemm_packed: wp a contiguous [N / 16, K / ", P, ", ", kCols * P,
              "] tensor of x's dtype (pack_gemm)");
  const int64_t M = x.size(0), K = x.size(1), N = wp.size(0) * kCols;
  TORCH_CHECK(K == wp.size(1) * P, "gemm_packed: x has K = ", K, " inputs, wp was packed for ",
              wp.size(1) * P);
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == N && out.is_contiguous() &&
                  out.scalar_type() == t,
              "gemm_packed: out a contiguous [M, N] = [", M, ", ", N, "] tensor of x's dtype");
  TORCH_CHECK(bias.numel() == 0 || (bias.dim() == 1 && bias.size(0) == N &&
                                    bias.scalar_type() == t),
              "gemm_packed: bias empty or an [N] = [", N, "] tensor of x's dtype");
  if (M == 0) return;
  at::Tensor bias_f;  // added to the fp32 sums before the one rounding
  if (bias.numel()) bias_f = bias.to(at::kFloat).contiguous();
  const float* bp = bias.numel() ? bias_f.data_ptr<float>() : nullptr;
  if (t == at::kFloat) {
    if constexpr (sagellm_gemm::kServes<float>)
      run<float>(x.data_ptr<float>(), wp.data_ptr<float>(), bp, out.data_ptr<float>(), M, N, K);
    return;
  }
  if constexpr (sagellm_gemm::kServes<at::BFloat16>)
    run<at::BFloat16>(x.data_ptr<at::BFloat16>(), wp.data_ptr<at::BFloat16>(), bp,
                      out.data_ptr<at::BFloat16>(), M, N, K);
}

// The dtypes gemm_packed serves on this build.
std::vector<std::string> gemm_packed_dtypes() { return served_names(); }

// The fewest rows for which linear.py gives this GEMM a packed weight rather than the GEMV.
int64_t gemm_packed_min_rows() { return sagellm_gemm::kMinRows; }

}  // namespace sagellm

TORCH_LIBRARY_FRAGMENT(sagellm, m) {
  m.def("pack_gemm(Tensor w) -> Tensor");
  m.def("gemm_packed(Tensor x, Tensor wp, Tensor bias, Tensor(a!) out) -> ()");
  m.def("gemm_packed_dtypes() -> str[]", &sagellm::gemm_packed_dtypes);
  m.def("gemm_packed_min_rows() -> int", &sagellm::gemm_packed_min_rows);
}

TORCH_LIBRARY_IMPL(sagellm, CPU, m) {
  m.impl("pack_gemm", &sagellm::pack_gemm);
  m.impl("gemm_packed", &sagellm::gemm_packed);
}
#endif
