// charlm's fused LSTM cell forward (CPU, float32): one op for the elementwise half of a step.
//
// From block-order pre-activations z = [i | g | f | o] (z = x W_x + h W_h + b, computed outside
// by TensorFlow's oneDNN matmul) and the previous cell state c:
//   i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g);  c_new = f * c + i * g;  h = o * tanh(c_new)
// Outputs h, c_new and the activations i, g, f, o, tanh(c_new) that the backward pass
// (TensorFlow's LSTMBlockCellGrad) reads.  Rows are shared out over TensorFlow's CPU threads;
// each row uses Eigen's vectorised tanh and logistic.
#define EIGEN_USE_THREADS
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace charlm {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

REGISTER_OP("CharlmCellForward")
    .Input("z: float")
    .Input("c: float")
    .Output("h: float")
    .Output("c_new: float")
    .Output("i: float")
    .Output("g: float")
    .Output("f: float")
    .Output("o: float")
    .Output("tc: float")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* ctx) {
      for (int k = 0; k < 7; ++k) ctx->set_output(k, ctx->input(1));
      return absl::OkStatus();
    });

class CellForwardOp : public OpKernel {
 public:
  explicit CellForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& z = ctx->input(0);
    const Tensor& c = ctx->input(1);
    OP_REQUIRES(ctx, z.dims() == 2 && c.dims() == 2,
                absl::InvalidArgumentError("z and c must be matrices"));
    const int64_t batch = c.dim_size(0), hidden = c.dim_size(1);
    OP_REQUIRES(ctx, z.dim_size(0) == batch && z.dim_size(1) == 4 * hidden,
                absl::InvalidArgumentError("z must be [batch, 4 * hidden] for c [batch, hidden]"));
    Tensor* out[7];
    for (int k = 0; k < 7; ++k) OP_REQUIRES_OK(ctx, ctx->allocate_output(k, c.shape(), &out[k]));
    const float* zp = z.flat<float>().data();
    const float* cp = c.flat<float>().data();
    float* p[7];
    for (int k = 0; k < 7; ++k) p[k] = out[k]->flat<float>().data();

    auto rows = [&](int64_t begin, int64_t end) {
      using Row = Eigen::Map<Eigen::ArrayXf>;
      using ConstRow = Eigen::Map<const Eigen::ArrayXf>;
      for (int64_t b = begin; b < end; ++b) {
        const float* zr = zp + b * 4 * hidden;
        const int64_t at = b * hidden;
        Row h(p[0] + at, hidden), c_new(p[1] + at, hidden), i(p[2] + at, hidden),
            g(p[3] + at, hidden), f(p[4] + at, hidden), o(p[5] + at, hidden), tc(p[6] + at, hidden);
        i = ConstRow(zr, hidden).logistic();
        g = ConstRow(zr + hidden, hidden).tanh();
        f = ConstRow(zr + 2 * hidden, hidden).logistic();
        o = ConstRow(zr + 3 * hidden, hidden).logistic();
        c_new = f * ConstRow(cp + at, hidden) + i * g;
        tc = c_new.tanh();
        h = o * tc;
      }
    };
    // ~60 cycles per element: four transcendental functions and a few multiply-adds
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(batch, hidden * 60, rows);
  }
};

REGISTER_KERNEL_BUILDER(Name("CharlmCellForward").Device(::tensorflow::DEVICE_CPU), CellForwardOp);

}  // namespace charlm
