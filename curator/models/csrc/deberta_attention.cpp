// DeBERTa's disentangled attention on CPU in float32, one (row, head) at a time, in cache.
//
// PyTorch's ops build the [rows, heads, n, n] bias (content->position plus position->content scores)
// in passes over memory before attention reads it again; here each (row, head) builds its n x n scores
// in a buffer that stays in the core's cache: the position products by blocks of 64 queries (c2p) and
// 64 keys (p2c), each read as a Toeplitz band of its block's product, then the padding mask, Q.K^T
// added by BLAS, softmax, and the weights times V written straight into [rows, n, heads, d].
// Also the layer's output block in fewer passes: bias + GELU in place after the up projection, and
// bias + residual + LayerNorm in place after the output and down projections.
// Compiled on first use by curator/models/native.py for the machine it runs on.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);  // BLAS (MKL in torch's x86 builds)

namespace {

constexpr int64_t BLOCK = 64;  // queries (c2p) or keys (p2c) per position product
constexpr int64_t TILE = 16;   // side of the tiles of the transposed (p2c) add
constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

// exp(v) for v <= 0: Cephes' polynomial, written so the compiler vectorises the loops that call it;
// 0 below -87 (where float32's exp underflows) and for -inf.
inline float exp_nonpositive(float v) {
  const float c = v > -87.0f ? v : -87.0f;
  const float k = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(c / ln 2)
  float r = c - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // 2^k
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return v > -87.0f ? p * scale : 0.0f;
}

// exp(x - shift) in place, returning the sum; x - shift <= 0.
float exp_sum(float* x, int64_t n, float shift) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float e = exp_nonpositive(x[j] - shift);
    x[j] = e;
    sum += e;
  }
  return sum;
}

// 16 running maxima: one would be a serial chain of dependent comparisons.
float row_max(const float* row, int64_t n) {
  float part[16];
  std::fill(part, part + 16, NEG_INF);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int u = 0; u < 16; ++u) part[u] = part[u] > row[j + u] ? part[u] : row[j + u];
  float m = NEG_INF;
  for (; j < n; ++j) m = m > row[j] ? m : row[j];
  for (int u = 0; u < 16; ++u) m = m > part[u] ? m : part[u];
  return m;
}

// Rows of s to exp(s - max); inv[i] = 1 / the row's sum (0 for a row with every key masked).
void softmax_rows(float* s, int64_t n, float* inv) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = s + i * n;
    const float m = row_max(row, n);
    if (m == NEG_INF) {
      std::fill(row, row + n, 0.0f);
      inv[i] = 0.0f;
      continue;
    }
    inv[i] = 1.0f / exp_sum(row, n, m);
  }
}

// Row-major C[m x n] = alpha * A[m x k] * B' + beta * C, where B' is B[k x n] or, with b_transposed,
// the transpose of B[n x k]: BLAS's sgemm (column-major) on the transposed problem, C' = B'' * A'.
// Called straight, not through ATen's dispatcher: a (row, head) of a short row is a few microseconds
// of arithmetic, and a dozen dispatched ops cost as much again.
void gemm(int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb, bool b_transposed,
          float beta, float* C, int ldc) {
  const char ta = b_transposed ? 'T' : 'N', tb = 'N';
  sgemm_(&ta, &tb, &n, &m, &k, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

// One block's position product: P[b x w] = x[s, s + b) . table^T[:, n - s - b, 2n - 1 - s), the w = n + b - 1
// relative distances rows s..s+b-1 meet (x: queries for c2p, keys for p2c; rows ldx apart; table^T: the
// table transposed, [d, 2n - 1], so the product is a plain one: BLAS runs B^T operands ~1.3x slower at these
// sizes). Returns w.
int64_t block_product(const float* x, int ldx, const float* table_t, int64_t n, int64_t s, int64_t b, int d,
                      float* P) {
  const int64_t w = n + b - 1;
  gemm(static_cast<int>(b), static_cast<int>(w), d, 1.0f, x + s * ldx, ldx, table_t + (n - s - b),
       static_cast<int>(2 * n - 1), false, 0.0f, P, static_cast<int>(w));
  return w;
}

// q, k, v: [rows, heads, n, d] (head dim contiguous); key_table (c2p) and query_table (p2c):
// [heads, d, 2n - 1] (transposed), pre-scaled, column m for relative distance (i - j) = n - 1 - m (key table)
// and m - (n - 1) (query table), as curator/models/fast_deberta.py lays them out; keep: [rows, n] key mask.
at::Tensor deberta_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const c10::optional<at::Tensor>& key_table,
                             const c10::optional<at::Tensor>& query_table, const at::Tensor& keep,
                             double scale) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "q, k, v must be [rows, heads, n, d]");
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "float32 only");
  const int64_t R = q.size(0), H = q.size(1), n = q.size(2), d = q.size(3);
  TORCH_CHECK(n > 0 && n <= 16384 && keep.numel() == R * n, "keep must hold one flag per row and key");
  // rows of each (row, head) evenly strided, the head dim contiguous (q, k, v as views of one QKV matmul)
  auto usable = [](const at::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); };
  const at::Tensor qc = usable(q), kc = usable(k), vc = usable(v);
  const bool c2p = key_table.has_value(), p2c = query_table.has_value();
  const std::vector<int64_t> table_shape{H, d, 2 * n - 1};
  at::Tensor tk, tq;
  if (c2p) {
    tk = key_table->to(at::kFloat).contiguous();
    TORCH_CHECK(tk.sizes() == at::IntArrayRef(table_shape), "key_table must be [heads, d, 2n - 1]");
  }
  if (p2c) {
    tq = query_table->to(at::kFloat).contiguous();
    TORCH_CHECK(tq.sizes() == at::IntArrayRef(table_shape), "query_table must be [heads, d, 2n - 1]");
  }
  const at::Tensor mask = keep.to(at::kBool).reshape({R, n}).contiguous();
  const bool* kept = mask.data_ptr<bool>();
  at::Tensor out = at::empty({R, n, H, d}, q.options());
  const float *Q = qc.data_ptr<float>(), *K = kc.data_ptr<float>(), *V = vc.data_ptr<float>();
  const float* TK = c2p ? tk.data_ptr<float>() : nullptr;
  const float* TQ = p2c ? tq.data_ptr<float>() : nullptr;
  float* OUT = out.data_ptr<float>();
  const int N = static_cast<int>(n), D = static_cast<int>(d), HD = static_cast<int>(H * d);
  const int ldq = static_cast<int>(qc.stride(2)), ldk = static_cast<int>(kc.stride(2));
  const int ldv = static_cast<int>(vc.stride(2));
  const float alpha = static_cast<float>(scale);

  at::parallel_for(0, R * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(n * n), product(BLOCK * (n + BLOCK - 1)), inv(n);
    float* S = scores.data();
    float* P = product.data();
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r = t / H, h = t % H;
      const float* qh = Q + r * qc.stride(0) + h * qc.stride(1);
      const float* kh = K + r * kc.stride(0) + h * kc.stride(1);
      const float* vh = V + r * vc.stride(0) + h * vc.stride(1);
      // c2p[i, j] = q_i . key_table[n - 1 - i + j]: row ii of a block's product read from column b-1-ii
      if (c2p) {
        const float* table = TK + h * d * (2 * n - 1);
        for (int64_t s = 0; s < n; s += BLOCK) {
          const int64_t b = std::min(n, s + BLOCK) - s, w = block_product(qh, ldq, table, n, s, b, D, P);
          for (int64_t ii = 0; ii < b; ++ii) std::memcpy(S + (s + ii) * n, P + ii * w + (b - 1 - ii), n * sizeof(float));
        }
      } else {
        std::fill(S, S + n * n, 0.0f);
      }
      // p2c[i, j] = k_j . query_table[n - 1 + i - j]: by blocks of keys, added into columns by tiles
      if (p2c) {
        const float* table = TQ + h * d * (2 * n - 1);
        for (int64_t s = 0; s < n; s += BLOCK) {
          const int64_t b = std::min(n, s + BLOCK) - s, w = block_product(kh, ldk, table, n, s, b, D, P);
          for (int64_t i0 = 0; i0 < n; i0 += TILE) {
            const int64_t i1 = std::min(n, i0 + TILE);
            for (int64_t j0 = 0; j0 < b; j0 += TILE) {
              const int64_t j1 = std::min(b, j0 + TILE);
              for (int64_t i = i0; i < i1; ++i) {
                float* dst = S + i * n + s;
                const float* src = P + (b - 1) + i;
                for (int64_t jj = j0; jj < j1; ++jj) dst[jj] += src[jj * (w - 1)];
              }
            }
          }
        }
      }
      const bool* row_keep = kept + r * n;
      for (int64_t j = 0; j < n; ++j)
        if (!row_keep[j])
          for (int64_t i = 0; i < n; ++i) S[i * n + j] = NEG_INF;
      gemm(N, N, D, alpha, qh, ldq, kh, ldk, true, 1.0f, S, N);  // S += scale * q k^T
      softmax_rows(S, n, inv.data());
      float* O = OUT + r * n * H * d + h * d;  // [n, d], rows H * d apart
      gemm(N, D, N, 1.0f, S, N, vh, ldv, false, 0.0f, O, HD);
      for (int64_t i = 0; i < n; ++i) {
        float* row = O + i * H * d;
        const float f = inv[i];
        for (int64_t c = 0; c < d; ++c) row[c] *= f;
      }
    }
  });
  return out;
}


// In place: x[m, :] = gelu(x[m, :] + bias), GELU with erf as Hugging Face's "gelu" (erf by Abramowitz
// and Stegun 7.1.26, as ATen's vectorised erf): the feed-forward's up projection then needs no bias
// copy before its matmul and no fresh [tokens, intermediate] tensor after it.
at::Tensor bias_gelu_(at::Tensor& x, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat, "x: contiguous float32 [m, n]");
  const int64_t m = x.size(0), n = x.size(1);
  TORCH_CHECK(bias.numel() == n && bias.scalar_type() == at::kFloat, "bias: float32 [n]");
  const at::Tensor b = bias.contiguous();
  float* X = x.data_ptr<float>();
  const float* B = b.data_ptr<float>();
  at::parallel_for(0, m, 16, [=](int64_t begin, int64_t end) {
    const float* __restrict shift = B;  // local and unaliased, so the loop below vectorises
    for (int64_t i = begin; i < end; ++i) {
      float* __restrict row = X + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const float v = row[j] + shift[j];
        const float z = v * 0.70710678118654752f;
        const float a = std::fabs(z);
        const float t = 1.0f / (0.3275911f * a + 1.0f);
        float r = 1.061405429f * t - 1.453152027f;
        r = r * t + 1.421413741f;
        r = r * t - 0.284496736f;
        r = r * t + 0.254829592f;
        const float erf_z = std::copysign(1.0f - r * t * exp_nonpositive(-(a * a)), z);
        row[j] = 0.5f * v * (1.0f + erf_z);
      }
    }
  });
  return x;
}

// In place: x[m, :] = LayerNorm(x[m, :] + bias + residual[m, :]) * weight + shift: the residual add,
// the Linear's bias and the norm in one pass over the rows instead of three.
at::Tensor bias_residual_layer_norm_(at::Tensor& x, const at::Tensor& bias, const at::Tensor& residual,
                                     const at::Tensor& weight, const at::Tensor& shift, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat, "x: contiguous float32 [m, n]");
  const int64_t m = x.size(0), n = x.size(1);
  TORCH_CHECK(residual.numel() == m * n && bias.numel() == n && weight.numel() == n && shift.numel() == n,
              "residual [m, n], bias/weight/shift [n]");
  const at::Tensor res = residual.reshape({m, n}).contiguous(), b = bias.contiguous();
  const at::Tensor w = weight.contiguous(), s = shift.contiguous();
  float* X = x.data_ptr<float>();
  const float *RES = res.data_ptr<float>(), *B = b.data_ptr<float>(), *W = w.data_ptr<float>(),
              *S = s.data_ptr<float>();
  const float epsilon = static_cast<float>(eps);
  at::parallel_for(0, m, 16, [=](int64_t begin, int64_t end) {
    const float *__restrict bias_row = B, *__restrict gain = W, *__restrict offset = S;
    for (int64_t i = begin; i < end; ++i) {
      float* __restrict row = X + i * n;
      const float* __restrict r = RES + i * n;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) {
        const float v = row[j] + bias_row[j] + r[j];
        row[j] = v;
        sum += v;
      }
      const float mean = sum / static_cast<float>(n);
      float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
      for (int64_t j = 0; j < n; ++j) {
        const float c = row[j] - mean;
        squares += c * c;
      }
      const float rstd = 1.0f / std::sqrt(squares / static_cast<float>(n) + epsilon);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] = (row[j] - mean) * rstd * gain[j] + offset[j];
    }
  });
  return x;
}

}  // namespace

TORCH_LIBRARY(curator, m) {
  m.def(
      "deberta_attention(Tensor q, Tensor k, Tensor v, Tensor? key_table, Tensor? query_table, Tensor keep, "
      "float scale) -> Tensor");
  m.def("bias_gelu_(Tensor(a!) x, Tensor bias) -> Tensor(a!)");
  m.def(
      "bias_residual_layer_norm_(Tensor(a!) x, Tensor bias, Tensor residual, Tensor weight, Tensor shift, "
      "float eps) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(curator, CPU, m) {
  m.impl("deberta_attention", deberta_attention);
  m.impl("bias_gelu_", bias_gelu_);
  m.impl("bias_residual_layer_norm_", bias_residual_layer_norm_);
}
