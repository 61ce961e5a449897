// segqa's native training kernels, loaded into MXNet 1.9 with mx.library.load (include/mxnet/lib_api.h, which
// ships in the mxnet wheel together with src/lib_api.cc). Built by `python -m training.native` (make does it
// when it sets up .venv); training falls back to pure-MXNet formulations when the library is absent.
// Each operator is one pass forward and one pass backward over its tensors, where MXNet's operators need several
// (and, for max-pooling and per-channel reductions, slow generic kernels); docs/segmenter.md has the profiles.
//
// segqa_prelu(x, alpha): ENet's per-channel PReLU, y = max(x, 0) + alpha[c] * min(x, 0) on (N, C, ...), with
// its exact gradients:
//   dx        = dy * (x > 0 ? 1 : alpha[c])
//   dalpha[c] = sum over the batch and the pixels of dy * min(x, 0)
// MXNet's own LeakyReLU(act_type="prelu") gets the slope gradient wrong in a hybridized graph and, like every
// composition of MXNet operators tried, spends most of the ENet's training step on it.
// segqa_residual_prelu(ext, main, mask, alpha): an ENet bottleneck's tail, prelu(main + mask[n, c] * ext), where
// mask holds the spatial dropout's per-(sample, channel) factor (0 or 1 / (1 - p); 1 at inference).
// segqa_maxpool2(x): 2x2 stride-2 max-pooling of (N, C, H, W).
// segqa_seg_loss(logits, labels, weights): the training loss (below, and training/losses.py).
// float32 and float64 (the finite-difference tests run in float64).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mxnet/lib_api.h"

using namespace mxnet::ext;

namespace {

// dy/dx of y = prelu(x) with slope a: 1 where x > 0 (or +0), a where x < 0. Written without a branch: the sign is a
// coin flip per pixel, and a mispredicted branch per pixel made the backward loops 16x slower.
template <typename T>
inline T prelu_slope_at(T a, T x) {
  return a + (T(1) - a) * (T(0.5) + std::copysign(T(0.5), x));
}

template <typename T>
void prelu_forward(const T* x, const T* alpha, T* y, int64_t n, int64_t c, int64_t inner) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t k = 0; k < c; ++k) {
      const T a = alpha[k];
      const int64_t off = (b * c + k) * inner;
      const T* xs = x + off;
      T* ys = y + off;
      for (int64_t i = 0; i < inner; ++i) ys[i] = std::max(xs[i], T(0)) + a * std::min(xs[i], T(0));
    }
  }
}

// out[k] = the sum over b of per_sample[b * c + k], across the batch in a fixed order: the same sum whatever the
// number of threads that computed the per-sample parts.
template <typename T>
void sum_over_batch(const std::vector<double>& per_sample, int64_t n, int64_t c, T* out) {
  for (int64_t k = 0; k < c; ++k) {
    double acc = 0.0;
    for (int64_t b = 0; b < n; ++b) acc += per_sample[static_cast<size_t>(b * c + k)];
    out[k] = static_cast<T>(acc);
  }
}

template <typename T>
void prelu_backward(const T* dy, const T* x, const T* alpha, T* dx, T* dalpha, int64_t n, int64_t c,
                    int64_t inner) {
  std::vector<double> sums(static_cast<size_t>(n * c));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t k = 0; k < c; ++k) {
      const T a = alpha[k];
      const int64_t off = (b * c + k) * inner;
      const T* xs = x + off;
      const T* gs = dy + off;
      T* dxs = dx + off;
      for (int64_t i = 0; i < inner; ++i) dxs[i] = gs[i] * prelu_slope_at(a, xs[i]);
      // The slope gradient in eight partial sums, so the loop vectorises without reassociating a single sum.
      T lanes[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
      int64_t i = 0;
      for (; i + 8 <= inner; i += 8) {
        for (int j = 0; j < 8; ++j) lanes[j] += gs[i + j] * std::min(xs[i + j], T(0));
      }
      T part = T(0);
      for (; i < inner; ++i) part += gs[i] * std::min(xs[i], T(0));
      for (int j = 0; j < 8; ++j) part += lanes[j];
      sums[static_cast<size_t>(b * c + k)] = static_cast<double>(part);
    }
  }
  sum_over_batch(sums, n, c, dalpha);
}

template <typename T>
void residual_prelu_forward(const T* ext, const T* main, const T* mask, const T* alpha, T* y, int64_t n,
                            int64_t c, int64_t inner) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t k = 0; k < c; ++k) {
      const T a = alpha[k];
      const T m = mask[b * c + k];
      const int64_t off = (b * c + k) * inner;
      const T* es = ext + off;
      const T* ms = main + off;
      T* ys = y + off;
      for (int64_t i = 0; i < inner; ++i) {
        const T z = ms[i] + m * es[i];
        ys[i] = std::max(z, T(0)) + a * std::min(z, T(0));
      }
    }
  }
}

// z = main + mask[b, k] * ext; y = prelu(z). Writes d_ext, d_main, d_mask (N, C) and d_alpha (C,).
template <typename T>
void residual_prelu_backward(const T* dy, const T* ext, const T* main, const T* mask, const T* alpha, T* d_ext,
                             T* d_main, T* d_mask, T* d_alpha, int64_t n, int64_t c, int64_t inner) {
  std::vector<double> sums(static_cast<size_t>(n * c));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t k = 0; k < c; ++k) {
      const T a = alpha[k];
      const T m = mask[b * c + k];
      const int64_t off = (b * c + k) * inner;
      const T* es = ext + off;
      const T* ms = main + off;
      const T* gs = dy + off;
      T* des = d_ext + off;
      T* dms = d_main + off;
      T slope[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
      T gate[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
      int64_t i = 0;
      for (; i + 8 <= inner; i += 8) {
        for (int j = 0; j < 8; ++j) {
          const T z = ms[i + j] + m * es[i + j];
          const T dz = gs[i + j] * prelu_slope_at(a, z);
          dms[i + j] = dz;
          des[i + j] = dz * m;
          slope[j] += gs[i + j] * std::min(z, T(0));
          gate[j] += dz * es[i + j];
        }
      }
      T s = T(0), g = T(0);
      for (; i < inner; ++i) {
        const T z = ms[i] + m * es[i];
        const T dz = gs[i] * prelu_slope_at(a, z);
        dms[i] = dz;
        des[i] = dz * m;
        s += gs[i] * std::min(z, T(0));
        g += dz * es[i];
      }
      for (int j = 0; j < 8; ++j) {
        s += slope[j];
        g += gate[j];
      }
      sums[static_cast<size_t>(b * c + k)] = static_cast<double>(s);
      d_mask[b * c + k] = g;
    }
  }
  sum_over_batch(sums, n, c, d_alpha);
}

template <typename T>
void maxpool2_forward(const T* x, T* y, int64_t planes, int64_t h, int64_t w) {
  const int64_t ho = h / 2, wo = w / 2;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t i = 0; i < ho; ++i) {
      const T* r0 = x + (p * h + 2 * i) * w;
      const T* r1 = r0 + w;
      T* yr = y + (p * ho + i) * wo;
      for (int64_t j = 0; j < wo; ++j) {
        yr[j] = std::max(std::max(r0[2 * j], r0[2 * j + 1]), std::max(r1[2 * j], r1[2 * j + 1]));
      }
    }
  }
}

// The gradient goes to the first maximum of each window in row-major order; a trailing odd row or column
// (outside every window) gets zero.
template <typename T>
void maxpool2_backward(const T* dy, const T* x, T* dx, int64_t planes, int64_t h, int64_t w) {
  const int64_t ho = h / 2, wo = w / 2;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    // Every window writes its four values; only what lies outside all windows is cleared here.
    if (h % 2) std::fill(dx + (p * h + h - 1) * w, dx + (p + 1) * h * w, T(0));
    for (int64_t i = 0; i < ho; ++i) {
      const T* r0 = x + (p * h + 2 * i) * w;
      const T* r1 = r0 + w;
      T* d0 = dx + (p * h + 2 * i) * w;
      T* d1 = d0 + w;
      if (w % 2) d0[w - 1] = d1[w - 1] = T(0);
      const T* gr = dy + (p * ho + i) * wo;
      for (int64_t j = 0; j < wo; ++j) {
        const T a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
        const T top = std::max(a, b), m = std::max(top, std::max(c, d));
        const bool in_top = !(top < m), first = !(a < top);
        const bool third = !in_top && !(c < m);
        const T g = gr[j];
        d0[2 * j] = (in_top && first) ? g : T(0);
        d0[2 * j + 1] = (in_top && !first) ? g : T(0);
        d1[2 * j] = third ? g : T(0);
        d1[2 * j + 1] = (!in_top && !third) ? g : T(0);
      }
    }
  }
}

// The segmentation loss (training/losses.py): softmax over the K classes of logits (N, K, H, W), then
//   ce   = sum_i w[y_i] * -log p[i, y_i] / max(sum_i w[y_i], 1e-6)
//   dice = sum_k w[k] * (1 - (2 I_k + s) / (P_k + O_k + s)) / sum_k w[k]
// over the labelled pixels i (labels outside 0..K-1, i.e. 255 = ignore, count nowhere), with I_k = sum_i p[i, k]
// [y_i = k], P_k = sum_i p[i, k], O_k = sum_i [y_i = k]. Pixels are summed in fixed chunks, and the chunks in a
// fixed order, so the value does not depend on the thread count.
constexpr int kMaxClasses = 16;
constexpr int64_t kChunk = 4096;

struct LossSums {
  double inter[kMaxClasses] = {}, prob[kMaxClasses] = {}, count[kMaxClasses] = {};
  double ce_num = 0.0, ce_den = 0.0;
};

// Softmax of pixel j of image n into p[0..k) (in T: float32's exp is the fast one); returns the log of the
// normaliser (log-sum-exp).
template <typename T>
inline T pixel_softmax(const T* logits, int64_t n, int64_t k, int64_t hw, int64_t j, T* p) {
  const T* z = logits + n * k * hw + j;
  T top = z[0];
  for (int64_t c = 1; c < k; ++c) top = std::max(top, z[c * hw]);
  T total = T(0);
  for (int64_t c = 0; c < k; ++c) total += (p[c] = std::exp(z[c * hw] - top));
  const T inv = T(1) / total;
  for (int64_t c = 0; c < k; ++c) p[c] *= inv;
  return top + std::log(total);
}

template <typename T>
inline int64_t pixel_label(const T* labels, int64_t i, int64_t k) {
  const T v = labels[i];
  return (v >= T(0) && v < T(k)) ? static_cast<int64_t>(v) : -1;
}

template <typename T>
LossSums loss_sums(const T* logits, const T* labels, const T* weights, int64_t n, int64_t k, int64_t hw) {
  const int64_t per_image = (hw + kChunk - 1) / kChunk;
  std::vector<LossSums> parts(static_cast<size_t>(n * per_image));
#pragma omp parallel for schedule(static)
  for (int64_t chunk = 0; chunk < n * per_image; ++chunk) {
    const int64_t b = chunk / per_image, begin = (chunk % per_image) * kChunk, end = std::min(hw, begin + kChunk);
    LossSums& part = parts[static_cast<size_t>(chunk)];
    T p[kMaxClasses];
    for (int64_t j = begin; j < end; ++j) {
      const int64_t y = pixel_label(labels, b * hw + j, k);
      if (y < 0) continue;
      const T log_norm = pixel_softmax(logits, b, k, hw, j, p);
      const double w = static_cast<double>(weights[y]);
      part.ce_num += w * static_cast<double>(log_norm - logits[(b * k + y) * hw + j]);
      part.ce_den += w;
      part.inter[y] += p[y];
      part.count[y] += 1.0;
      for (int64_t c = 0; c < k; ++c) part.prob[c] += p[c];
    }
  }
  LossSums total;
  for (const LossSums& part : parts) {
    for (int64_t c = 0; c < k; ++c) {
      total.inter[c] += part.inter[c];
      total.prob[c] += part.prob[c];
      total.count[c] += part.count[c];
    }
    total.ce_num += part.ce_num;
    total.ce_den += part.ce_den;
  }
  return total;
}

// The sums the backward pass needs, kept as the operator's third output: I, P, O (K each), ce_num, ce_den.
inline int64_t stats_size(int64_t k) { return 3 * k + 2; }

template <typename T>
void seg_loss_forward(const T* logits, const T* labels, const T* weights, T* dice, T* ce, T* stats, int64_t n,
                      int64_t k, int64_t hw, double smooth) {
  const LossSums s = loss_sums(logits, labels, weights, n, k, hw);
  for (int64_t c = 0; c < k; ++c) {
    stats[c] = static_cast<T>(s.inter[c]);
    stats[k + c] = static_cast<T>(s.prob[c]);
    stats[2 * k + c] = static_cast<T>(s.count[c]);
  }
  stats[3 * k] = static_cast<T>(s.ce_num);
  stats[3 * k + 1] = static_cast<T>(s.ce_den);
  double weight_sum = 0.0, loss = 0.0;
  for (int64_t c = 0; c < k; ++c) {
    const double w = static_cast<double>(weights[c]);
    weight_sum += w;
    loss += w * (1.0 - (2.0 * s.inter[c] + smooth) / (s.prob[c] + s.count[c] + smooth));
  }
  dice[0] = static_cast<T>(loss / weight_sum);
  ce[0] = static_cast<T>(s.ce_num / std::max(s.ce_den, 1e-6));
}

// d_logits for upstream gradients g_dice, g_ce of the two outputs, from the forward pass's stats.
template <typename T>
void seg_loss_backward(T g_dice, T g_ce, const T* logits, const T* labels, const T* weights, const T* stats,
                       T* d_logits, int64_t n, int64_t k, int64_t hw, double smooth) {
  double weight_sum = 0.0;
  for (int64_t c = 0; c < k; ++c) weight_sum += static_cast<double>(weights[c]);
  // dDice/dp[i, c] = on[c] * [y_i = c] + off[c] at a labelled pixel.
  T on[kMaxClasses], off[kMaxClasses];
  for (int64_t c = 0; c < k; ++c) {
    const double wc = static_cast<double>(weights[c]) / weight_sum, inter = static_cast<double>(stats[c]);
    const double d = static_cast<double>(stats[k + c]) + static_cast<double>(stats[2 * k + c]) + smooth;
    on[c] = static_cast<T>(-wc * 2.0 / d * static_cast<double>(g_dice));
    off[c] = static_cast<T>(wc * (2.0 * inter + smooth) / (d * d) * static_cast<double>(g_dice));
  }
  const double ce_scale = static_cast<double>(g_ce) / std::max(static_cast<double>(stats[3 * k + 1]), 1e-6);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t j = 0; j < hw; ++j) {
      T* dz = d_logits + b * k * hw + j;
      const int64_t y = pixel_label(labels, b * hw + j, k);
      if (y < 0) {
        for (int64_t c = 0; c < k; ++c) dz[c * hw] = T(0);
        continue;
      }
      T p[kMaxClasses], gp[kMaxClasses];
      pixel_softmax(logits, b, k, hw, j, p);
      T dot = T(0);
      for (int64_t c = 0; c < k; ++c) {
        gp[c] = off[c] + (c == y ? on[c] : T(0));
        dot += p[c] * gp[c];
      }
      const T ce_w = static_cast<T>(ce_scale * static_cast<double>(weights[y]));
      for (int64_t c = 0; c < k; ++c) dz[c * hw] = p[c] * (gp[c] - dot) + ce_w * (p[c] - (c == y ? T(1) : T(0)));
    }
  }
}

void dims(const MXTensor& t, int64_t* n, int64_t* c, int64_t* inner) {
  *n = t.shape[0];
  *c = t.shape[1];
  *inner = 1;
  for (size_t d = 2; d < t.shape.size(); ++d) *inner *= t.shape[d];
}

}  // namespace

// Runs `kernel` with T = the dtype of `x` (float64 or float32, which inferType allows) and x's (N, C, inner).
template <typename Kernel>
MXReturnValue with_dtype(const MXTensor& x, Kernel kernel) {
  int64_t n, c, inner;
  dims(x, &n, &c, &inner);
  if (x.dtype == kFloat64) {
    kernel(double(0), n, c, inner);
  } else {
    kernel(float(0), n, c, inner);
  }
  return MX_SUCCESS;
}

MXReturnValue prelu_forward_op(const std::unordered_map<std::string, std::string>& attrs,
                               std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                               const OpResource& res) {
  std::vector<MXTensor>& in = *inputs;
  std::vector<MXTensor>& out = *outputs;
  return with_dtype(in[0], [&](auto zero, int64_t n, int64_t c, int64_t inner) {
    using T = decltype(zero);
    prelu_forward(in[0].data<T>(), in[1].data<T>(), out[0].data<T>(), n, c, inner);
  });
}

// inputs: dy, then the forward inputs x, alpha; outputs: dx, dalpha.
MXReturnValue prelu_backward_op(const std::unordered_map<std::string, std::string>& attrs,
                                std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                const OpResource& res) {
  std::vector<MXTensor>& in = *inputs;
  std::vector<MXTensor>& out = *outputs;
  return with_dtype(in[1], [&](auto zero, int64_t n, int64_t c, int64_t inner) {
    using T = decltype(zero);
    prelu_backward(in[0].data<T>(), in[1].data<T>(), in[2].data<T>(), out[0].data<T>(), out[1].data<T>(), n, c,
                   inner);
  });
}

// inputs: ext, main, mask, alpha; output: y = prelu(main + mask * ext).
MXReturnValue residual_prelu_forward_op(const std::unordered_map<std::string, std::string>& attrs,
                                        std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                        const OpResource& res) {
  std::vector<MXTensor>& in = *inputs;
  std::vector<MXTensor>& out = *outputs;
  return with_dtype(in[0], [&](auto zero, int64_t n, int64_t c, int64_t inner) {
    using T = decltype(zero);
    residual_prelu_forward(in[0].data<T>(), in[1].data<T>(), in[2].data<T>(), in[3].data<T>(), out[0].data<T>(), n,
                           c, inner);
  });
}

// inputs: dy, then ext, main, mask, alpha; outputs: d_ext, d_main, d_mask, d_alpha.
MXReturnValue residual_prelu_backward_op(const std::unordered_map<std::string, std::string>& attrs,
                                         std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                         const OpResource& res) {
  std::vector<MXTensor>& in = *inputs;
  std::vector<MXTensor>& out = *outputs;
  return with_dtype(in[1], [&](auto zero, int64_t n, int64_t c, int64_t inner) {
    using T = decltype(zero);
    residual_prelu_backward(in[0].data<T>(), in[1].data<T>(), in[2].data<T>(), in[3].data<T>(), in[4].data<T>(),
                            out[0].data<T>(), out[1].data<T>(), out[2].data<T>(), out[3].data<T>(), n, c, inner);
  });
}

MXReturnValue maxpool2_forward_op(const std::unordered_map<std::string, std::string>& attrs,
                                  std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                  const OpResource& res) {
  std::vector<MXTensor>& in = *inputs;
  std::vector<MXTensor>& out = *outputs;
  return with_dtype(in[0], [&](auto zero, int64_t n, int64_t c, int64_t inner) {
    using T = decltype(zero);
    maxpool2_forward(in[0].data<T>(), out[0].data<T>(), n * c, in[0].shape[2], in[0].shape[3]);
  });
}

// inputs: dy, then x; output: dx.
MXReturnValue maxpool2_backward_op(const std::unordered_map<std::string, std::string>& attrs,
                                   std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                   const OpResource& res) {
  std::vector<MXTensor>& in = *inputs;
  std::vector<MXTensor>& out = *outputs;
  return with_dtype(in[1], [&](auto zero, int64_t n, int64_t c, int64_t inner) {
    using T = decltype(zero);
    maxpool2_backward(in[0].data<T>(), in[1].data<T>(), out[0].data<T>(), n * c, in[1].shape[2], in[1].shape[3]);
  });
}

double smooth_of(const std::unordered_map<std::string, std::string>& attrs) {
  const auto it = attrs.find("smooth");
  return it == attrs.end() ? 1.0 : std::stod(it->second);
}

// inputs: logits (N, K, H, W), labels (N, H, W), class weights (K,); outputs: dice (1,), ce (1,), and the sums
// the backward pass reads (3K + 2,).
MXReturnValue seg_loss_forward_op(const std::unordered_map<std::string, std::string>& attrs,
                                  std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                  const OpResource& res) {
  std::vector<MXTensor>& in = *inputs;
  std::vector<MXTensor>& out = *outputs;
  return with_dtype(in[0], [&](auto zero, int64_t n, int64_t k, int64_t hw) {
    using T = decltype(zero);
    seg_loss_forward(in[0].data<T>(), in[1].data<T>(), in[2].data<T>(), out[0].data<T>(), out[1].data<T>(),
                     out[2].data<T>(), n, k, hw, smooth_of(attrs));
  });
}

// inputs: the gradients of the three outputs (the stats' is unused), the three forward inputs, the three forward
// outputs; outputs: the gradients of logits, labels and class weights (zero for the last two).
MXReturnValue seg_loss_backward_op(const std::unordered_map<std::string, std::string>& attrs,
                                   std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                   const OpResource& res) {
  std::vector<MXTensor>& in = *inputs;
  std::vector<MXTensor>& out = *outputs;
  return with_dtype(in[3], [&](auto zero, int64_t n, int64_t k, int64_t hw) {
    using T = decltype(zero);
    seg_loss_backward(in[0].data<T>()[0], in[1].data<T>()[0], in[3].data<T>(), in[4].data<T>(), in[5].data<T>(),
                      in[8].data<T>(), out[0].data<T>(), n, k, hw, smooth_of(attrs));
    std::fill(out[1].data<T>(), out[1].data<T>() + out[1].size(), T(0));
    std::fill(out[2].data<T>(), out[2].data<T>() + out[2].size(), T(0));
  });
}

// The attributes, types and shapes of the operators.
template <int In, int Out>
MXReturnValue counts(const std::unordered_map<std::string, std::string>& attrs, int* num_in, int* num_out) {
  *num_in = In;
  *num_out = Out;
  return MX_SUCCESS;
}

// Every input has the first input's dtype, float32 or float64; so has the output.
MXReturnValue same_float_type(const std::unordered_map<std::string, std::string>& attrs,
                              std::vector<int>* intypes, std::vector<int>* outtypes) {
  const int t = (*intypes)[0];
  if (t != kFloat32 && t != kFloat64) {
    MX_ERROR_MSG << "segqa ops: float32 or float64 input expected, got MXNet dtype " << t;
    return MX_FAIL;
  }
  for (size_t i = 1; i < intypes->size(); ++i) {
    if ((*intypes)[i] != t) {
      MX_ERROR_MSG << "segqa ops: input " << i << " must have the first input's dtype";
      return MX_FAIL;
    }
  }
  for (int& out : *outtypes) out = t;
  return MX_SUCCESS;
}

// A PReLU's slopes: one per channel, shape (C,).
bool slopes_fit(const char* op, const std::vector<unsigned int>& alpha, unsigned int channels) {
  if (alpha.size() == 1 && alpha[0] == channels) return true;
  MX_ERROR_MSG << op << ": alpha must have shape (C,) with C = " << channels;
  return false;
}

MXReturnValue prelu_infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                                std::vector<std::vector<unsigned int>>* inshapes,
                                std::vector<std::vector<unsigned int>>* outshapes) {
  const auto& x = (*inshapes)[0];
  if (x.size() < 2) {
    MX_ERROR_MSG << "segqa_prelu: input of rank >= 2 (N, C, ...) expected";
    return MX_FAIL;
  }
  if (!slopes_fit("segqa_prelu", (*inshapes)[1], x[1])) return MX_FAIL;
  (*outshapes)[0] = x;
  return MX_SUCCESS;
}

MXReturnValue residual_prelu_infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                                         std::vector<std::vector<unsigned int>>* inshapes,
                                         std::vector<std::vector<unsigned int>>* outshapes) {
  const auto& x = (*inshapes)[0];
  if (x.size() < 2 || (*inshapes)[1] != x) {
    MX_ERROR_MSG << "segqa_residual_prelu: ext and main must have one shape (N, C, ...)";
    return MX_FAIL;
  }
  size_t mask_size = 1;
  for (unsigned int d : (*inshapes)[2]) mask_size *= d;
  if (mask_size != static_cast<size_t>(x[0]) * x[1]) {
    MX_ERROR_MSG << "segqa_residual_prelu: mask must hold one value per (sample, channel): N x C = " << x[0] * x[1];
    return MX_FAIL;
  }
  if (!slopes_fit("segqa_residual_prelu", (*inshapes)[3], x[1])) return MX_FAIL;
  (*outshapes)[0] = x;
  return MX_SUCCESS;
}

MXReturnValue maxpool2_infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                                   std::vector<std::vector<unsigned int>>* inshapes,
                                   std::vector<std::vector<unsigned int>>* outshapes) {
  const auto& x = (*inshapes)[0];
  if (x.size() != 4 || x[2] < 2 || x[3] < 2) {
    MX_ERROR_MSG << "segqa_maxpool2: input (N, C, H, W) with H, W >= 2 expected";
    return MX_FAIL;
  }
  (*outshapes)[0] = {x[0], x[1], x[2] / 2, x[3] / 2};
  return MX_SUCCESS;
}

REGISTER_OP(segqa_prelu)
    .setForward(prelu_forward_op, "cpu")
    .setBackward(prelu_backward_op, "cpu")
    .setParseAttrs(counts<2, 1>)
    .setInferType(same_float_type)
    .setInferShape(prelu_infer_shape);

REGISTER_OP(segqa_residual_prelu)
    .setForward(residual_prelu_forward_op, "cpu")
    .setBackward(residual_prelu_backward_op, "cpu")
    .setParseAttrs(counts<4, 1>)
    .setInferType(same_float_type)
    .setInferShape(residual_prelu_infer_shape);

REGISTER_OP(segqa_maxpool2)
    .setForward(maxpool2_forward_op, "cpu")
    .setBackward(maxpool2_backward_op, "cpu")
    .setParseAttrs(counts<1, 1>)
    .setInferType(same_float_type)
    .setInferShape(maxpool2_infer_shape);

MXReturnValue seg_loss_infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                                   std::vector<std::vector<unsigned int>>* inshapes,
                                   std::vector<std::vector<unsigned int>>* outshapes) {
  const auto& z = (*inshapes)[0];
  const auto& y = (*inshapes)[1];
  if (z.size() != 4 || z[1] < 1 || z[1] > kMaxClasses) {
    MX_ERROR_MSG << "segqa_seg_loss: logits (N, K, H, W) with 1 <= K <= " << kMaxClasses << " expected";
    return MX_FAIL;
  }
  if (y.size() != 3 || y[0] != z[0] || y[1] != z[2] || y[2] != z[3]) {
    MX_ERROR_MSG << "segqa_seg_loss: labels must have shape (N, H, W) = (" << z[0] << ", " << z[2] << ", " << z[3]
                 << ")";
    return MX_FAIL;
  }
  if ((*inshapes)[2].size() != 1 || (*inshapes)[2][0] != z[1]) {
    MX_ERROR_MSG << "segqa_seg_loss: class weights must have shape (K,) with K = " << z[1];
    return MX_FAIL;
  }
  (*outshapes)[0] = {1};
  (*outshapes)[1] = {1};
  (*outshapes)[2] = {static_cast<unsigned int>(stats_size(z[1]))};
  return MX_SUCCESS;
}

REGISTER_OP(segqa_seg_loss)
    .setForward(seg_loss_forward_op, "cpu")
    .setBackward(seg_loss_backward_op, "cpu")
    .setParseAttrs(counts<3, 3>)
    .setInferType(same_float_type)
    .setInferShape(seg_loss_infer_shape);

MXReturnValue initialize(int version) {
  if (version >= 10900) return MX_SUCCESS;
  MX_ERROR_MSG << "segqa_ops was written for MXNet >= 1.9, found version code " << version;
  return MX_FAIL;
}
