// segqa's native training kernels, loaded into MXNet 1.9 with mx.library.load (include/mxnet/lib_api.h, which
// ships in the mxnet wheel together with src/lib_api.cc). Built by `python -m training.native` (make does it
// when it sets up .venv); training falls back to pure-MXNet formulations when the library is absent.
//
// segqa_prelu(x, alpha): ENet's per-channel PReLU, y = max(x, 0) + alpha[c] * min(x, 0) on (N, C, ...), with
// its exact gradients in one pass each way:
//   dx        = dy * (x > 0 ? 1 : alpha[c])
//   dalpha[c] = sum over the batch and the pixels of dy * min(x, 0)
// MXNet's own LeakyReLU(act_type="prelu") gets the slope gradient wrong in a hybridized graph and, like every
// composition of MXNet operators tried (docs/segmenter.md), spends most of the ENet's training step on it.
// float32 and float64 (the finite-difference test runs in float64).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mxnet/lib_api.h"

using namespace mxnet::ext;

namespace {

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
      // No branch on the sign of x: it is a coin flip per pixel, and a mispredicted branch per pixel made this
      // loop 16x slower. step = 1 where x > 0 (or +0), 0 where x < 0.
      for (int64_t i = 0; i < inner; ++i) {
        const T step = T(0.5) + std::copysign(T(0.5), xs[i]);
        dxs[i] = gs[i] * (a + (T(1) - a) * step);
      }
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
  for (int64_t k = 0; k < c; ++k) {  // across the batch in a fixed order: the same sum whatever the threads
    double acc = 0.0;
    for (int64_t b = 0; b < n; ++b) acc += sums[static_cast<size_t>(b * c + k)];
    dalpha[k] = static_cast<T>(acc);
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

MXReturnValue prelu_parse_attrs(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                                int* num_out) {
  *num_in = 2;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue prelu_infer_type(const std::unordered_map<std::string, std::string>& attrs,
                               std::vector<int>* intypes, std::vector<int>* outtypes) {
  const int t = (*intypes)[0];
  if (t != kFloat32 && t != kFloat64) {
    MX_ERROR_MSG << "segqa_prelu: float32 or float64 input expected, got MXNet dtype " << t;
    return MX_FAIL;
  }
  if ((*intypes)[1] != t) {
    MX_ERROR_MSG << "segqa_prelu: alpha must have the input's dtype";
    return MX_FAIL;
  }
  (*outtypes)[0] = t;
  return MX_SUCCESS;
}

MXReturnValue prelu_infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                                std::vector<std::vector<unsigned int>>* inshapes,
                                std::vector<std::vector<unsigned int>>* outshapes) {
  const auto& x = (*inshapes)[0];
  const auto& a = (*inshapes)[1];
  if (x.size() < 2) {
    MX_ERROR_MSG << "segqa_prelu: input of rank >= 2 (N, C, ...) expected";
    return MX_FAIL;
  }
  if (a.size() != 1 || a[0] != x[1]) {
    MX_ERROR_MSG << "segqa_prelu: alpha must have shape (C,) with C = " << x[1];
    return MX_FAIL;
  }
  (*outshapes)[0] = x;
  return MX_SUCCESS;
}

REGISTER_OP(segqa_prelu)
    .setForward(prelu_forward_op, "cpu")
    .setBackward(prelu_backward_op, "cpu")
    .setParseAttrs(prelu_parse_attrs)
    .setInferType(prelu_infer_type)
    .setInferShape(prelu_infer_shape);

MXReturnValue initialize(int version) {
  if (version >= 10900) return MX_SUCCESS;
  MX_ERROR_MSG << "segqa_ops was written for MXNet >= 1.9, found version code " << version;
  return MX_FAIL;
}
