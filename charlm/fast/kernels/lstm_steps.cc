// charlm's LSTM step kernels (CPU): the elementwise halves of one forward and one backward
// step of the long-window training loop, each as one op; and for evaluation, a masked forward
// step and the input half's table lookup.
//
// The loop keeps its tensors feature-major: a step's pre-activations are [4H, B] with the gates
// as row blocks [i | f | g | o] (charlm.nn.cells.LSTMCell's order), the states [H, B].  The
// recurrent matmul is then W_h^T [4H, H] @ h [H, B], the shape oneDNN runs fastest (its small
// operand is the one it repacks), and each gate is one contiguous run of H * B values, so these
// kernels see flat arrays.
//
// T is the matmul's type (float or bfloat16): the recurrent products arrive in T and the kernels
// also return h and dz in T for the next matmul; everything else (the input half, cell state,
// activations, gradients) stays float32.
//
// Forward:  i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g);  c' = f c + i g;  h = o tanh(c')
//           with z = xw + zr.  "saved" [6, H, B] holds c, i, f, g, o, tanh(c') for the backward.
// Backward: dh = d_out + d_hr;  dc = d_c + dh o (1 - tanh(c')^2);
//           dz = [dc g i (1 - i) | dc c f (1 - f) | dc i (1 - g^2) | dh tanh(c') o (1 - o)];
//           d_c_prev = dc f.
#define EIGEN_USE_THREADS
#include <type_traits>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace charlm {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

using Floats = Eigen::Map<Eigen::ArrayXf>;
using ConstFloats = Eigen::Map<const Eigen::ArrayXf>;
template <typename T>
using ConstArray = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using Array = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

// Values per scheduling unit of ParallelFor, and its cost estimate in cycles per value.
constexpr int64_t kBlock = 1024;
constexpr int64_t kCyclesPerValue = 40;

template <typename T>
Eigen::ArrayXf as_float(const T* p, int64_t len) {
  if constexpr (std::is_same<T, float>::value) {
    return ConstFloats(p, len);
  } else {
    return ConstArray<T>(p, len).template cast<float>();
  }
}

template <typename T>
void store(T* p, const Eigen::ArrayXf& values) {
  if constexpr (std::is_same<T, float>::value) {
    Array<T>(p, values.size()) = values;
  } else {
    Array<T>(p, values.size()) = values.template cast<T>();
  }
}

// Allocates output `index` of `shape` in T.  (For T = float a second output sharing the float
// buffer gave wrong gradients inside TensorFlow's loops, so it is always a copy of its own.)
template <typename T>
T* low_output(OpKernelContext* ctx, int index, const TensorShape& shape) {
  Tensor* out = nullptr;
  const ::absl::Status status = ctx->allocate_output(index, shape, &out);
  if (!status.ok()) {
    ctx->SetStatus(status);
    return nullptr;
  }
  return out->flat<T>().data();
}

void parallel(OpKernelContext* ctx, int64_t n, const std::function<void(int64_t, int64_t)>& work) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
      blocks, kBlock * kCyclesPerValue, [&](int64_t first, int64_t last) {
        work(first * kBlock, std::min(n, last * kBlock));
      });
}

::absl::Status step_shapes(InferenceContext* ctx, int gates_input, int state_input) {
  ShapeHandle gates, state;
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(gates_input), 2, &gates));
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(state_input), 2, &state));
  return absl::OkStatus();
}

REGISTER_OP("CharlmLstmForward")
    .Attr("T: {float, bfloat16}")
    .Input("xw: float")
    .Input("zr: T")
    .Input("c: float")
    .Output("h: float")
    .Output("h_low: T")
    .Output("c_new: float")
    .Output("saved: float")
    .SetShapeFn([](InferenceContext* ctx) {
      TF_RETURN_IF_ERROR(step_shapes(ctx, 0, 2));
      for (int k = 0; k < 3; ++k) ctx->set_output(k, ctx->input(2));
      ShapeHandle saved;
      TF_RETURN_IF_ERROR(ctx->Concatenate(ctx->Vector(6), ctx->input(2), &saved));
      ctx->set_output(3, saved);
      return absl::OkStatus();
    });

template <typename T>
class LstmForwardOp : public OpKernel {
 public:
  explicit LstmForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& xw = ctx->input(0);
    const Tensor& zr = ctx->input(1);
    const Tensor& c = ctx->input(2);
    OP_REQUIRES(ctx, c.dims() == 2 && xw.dims() == 2 && zr.dims() == 2,
                absl::InvalidArgumentError("xw, zr and c must be matrices"));
    const int64_t hidden = c.dim_size(0), batch = c.dim_size(1), n = hidden * batch;
    OP_REQUIRES(ctx, xw.dim_size(0) == 4 * hidden && xw.dim_size(1) == batch && xw.shape() == zr.shape(),
                absl::InvalidArgumentError("xw and zr must be [4 * hidden, batch] for c [hidden, batch]"));
    Tensor *h, *c_new, *saved;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, c.shape(), &h));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, c.shape(), &c_new));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({6, hidden, batch}), &saved));
    T* h_low = low_output<T>(ctx, 1, c.shape());
    if (!ctx->status().ok()) return;
    const float* x = xw.flat<float>().data();
    const T* r = zr.flat<T>().data();
    const float* cp = c.flat<float>().data();
    float* hp = h->flat<float>().data();
    float* cn = c_new->flat<float>().data();
    float* s = saved->flat<float>().data();

    parallel(ctx, n, [&](int64_t begin, int64_t end) {
      const int64_t len = end - begin;
      auto gate = [&](int k) -> Eigen::ArrayXf {
        return ConstFloats(x + k * n + begin, len) + as_float(r + k * n + begin, len);
      };
      Floats c_prev(s + begin, len), i(s + n + begin, len), f(s + 2 * n + begin, len),
          g(s + 3 * n + begin, len), o(s + 4 * n + begin, len), tc(s + 5 * n + begin, len);
      Floats c_out(cn + begin, len), h_out(hp + begin, len);
      c_prev = ConstFloats(cp + begin, len);
      i = gate(0).logistic();
      f = gate(1).logistic();
      g = gate(2).tanh();
      o = gate(3).logistic();
      c_out = f * c_prev + i * g;
      tc = c_out.tanh();
      h_out = o * tc;
      store(h_low + begin, Eigen::ArrayXf(h_out));
    });
  }
};

REGISTER_OP("CharlmLstmBackward")
    .Attr("T: {float, bfloat16}")
    .Input("d_out: float")
    .Input("d_hr: T")
    .Input("d_c: float")
    .Input("saved: float")
    .Output("dz: float")
    .Output("dz_low: T")
    .Output("d_c_prev: float")
    .SetShapeFn([](InferenceContext* ctx) {
      TF_RETURN_IF_ERROR(step_shapes(ctx, 0, 2));
      auto rows = ctx->Dim(ctx->input(2), 0);
      tensorflow::shape_inference::DimensionHandle four_rows;
      TF_RETURN_IF_ERROR(ctx->Multiply(rows, 4, &four_rows));
      ShapeHandle out = ctx->Matrix(four_rows, ctx->Dim(ctx->input(2), 1));
      ctx->set_output(0, out);
      ctx->set_output(1, out);
      ctx->set_output(2, ctx->input(2));
      return absl::OkStatus();
    });

template <typename T>
class LstmBackwardOp : public OpKernel {
 public:
  explicit LstmBackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& d_out = ctx->input(0);
    const Tensor& d_hr = ctx->input(1);
    const Tensor& d_c = ctx->input(2);
    const Tensor& saved = ctx->input(3);
    OP_REQUIRES(ctx, d_c.dims() == 2 && d_out.shape() == d_c.shape() && d_hr.shape() == d_c.shape(),
                absl::InvalidArgumentError("d_out, d_hr and d_c must be [hidden, batch] matrices"));
    const int64_t hidden = d_c.dim_size(0), batch = d_c.dim_size(1), n = hidden * batch;
    OP_REQUIRES(ctx, saved.shape() == TensorShape({6, hidden, batch}),
                absl::InvalidArgumentError("saved must be [6, hidden, batch]"));
    Tensor *dz, *d_c_prev;
    const TensorShape gates({4 * hidden, batch});
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, gates, &dz));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, d_c.shape(), &d_c_prev));
    T* dz_low = low_output<T>(ctx, 1, gates);
    if (!ctx->status().ok()) return;
    const float* dop = d_out.flat<float>().data();
    const T* dhr = d_hr.flat<T>().data();
    const float* dcp = d_c.flat<float>().data();
    const float* s = saved.flat<float>().data();
    float* z = dz->flat<float>().data();
    float* dcn = d_c_prev->flat<float>().data();

    parallel(ctx, n, [&](int64_t begin, int64_t end) {
      const int64_t len = end - begin;
      auto act = [&](int k) { return ConstFloats(s + k * n + begin, len); };
      const auto c_prev = act(0), i = act(1), f = act(2), g = act(3), o = act(4), tc = act(5);
      const Eigen::ArrayXf dh = ConstFloats(dop + begin, len) + as_float(dhr + begin, len);
      const Eigen::ArrayXf dc = ConstFloats(dcp + begin, len) + dh * o * (1.0f - tc * tc);
      Floats di(z + begin, len), df(z + n + begin, len), dg(z + 2 * n + begin, len), d_o(z + 3 * n + begin, len);
      di = dc * g * i * (1.0f - i);
      dg = dc * i * (1.0f - g * g);
      df = dc * c_prev * f * (1.0f - f);
      d_o = dh * tc * o * (1.0f - o);
      Floats(dcn + begin, len) = dc * f;
      for (int k = 0; k < 4; ++k) store(dz_low + k * n + begin, Eigen::ArrayXf(ConstFloats(z + k * n + begin, len)));
    });
  }
};


// Inference (evaluation in side-by-side streams): one masked forward step, and the input half's
// table lookup, both feature-major.
//
// CharlmColumns: table [R, V], ids [S] -> [R, S] with column s = table[:, ids[s]] (each output
// row gathers from one short table row, which stays in cache).
REGISTER_OP("CharlmColumns")
    .Input("table: float")
    .Input("ids: int32")
    .Output("columns: float")
    .SetShapeFn([](InferenceContext* ctx) {
      ShapeHandle table, ids;
      TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(0), 2, &table));
      TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(1), 1, &ids));
      ctx->set_output(0, ctx->Matrix(ctx->Dim(table, 0), ctx->Dim(ids, 0)));
      return absl::OkStatus();
    });

class ColumnsOp : public OpKernel {
 public:
  explicit ColumnsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& table = ctx->input(0);
    const Tensor& ids = ctx->input(1);
    OP_REQUIRES(ctx, table.dims() == 2 && ids.dims() == 1,
                absl::InvalidArgumentError("table must be a matrix and ids a vector"));
    const int64_t rows = table.dim_size(0), vocab = table.dim_size(1), cols = ids.dim_size(0);
    const int32_t* id = ids.flat<int32_t>().data();
    for (int64_t s = 0; s < cols; ++s) {
      OP_REQUIRES(ctx, id[s] >= 0 && id[s] < vocab, absl::InvalidArgumentError("ids out of range"));
    }
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({rows, cols}), &out));
    const float* t = table.flat<float>().data();
    float* o = out->flat<float>().data();
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        rows, cols * 2, [&](int64_t first, int64_t last) {
          for (int64_t r = first; r < last; ++r) {
            const float* row = t + r * vocab;
            for (int64_t s = 0; s < cols; ++s) o[r * cols + s] = row[id[s]];
          }
        });
  }
};

// CharlmLstmStep: z = xw + zr; the forward formulas; columns s with keep[s] false keep their h
// and c.  Outputs h (float), h in T (for the next matmul) and c.
REGISTER_OP("CharlmLstmStep")
    .Attr("T: {float, bfloat16}")
    .Input("xw: float")
    .Input("zr: T")
    .Input("h: float")
    .Input("c: float")
    .Input("keep: bool")
    .Output("h_new: float")
    .Output("h_low: T")
    .Output("c_new: float")
    .SetShapeFn([](InferenceContext* ctx) {
      TF_RETURN_IF_ERROR(step_shapes(ctx, 0, 3));
      for (int k = 0; k < 3; ++k) ctx->set_output(k, ctx->input(3));
      return absl::OkStatus();
    });

template <typename T>
class LstmStepOp : public OpKernel {
 public:
  explicit LstmStepOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& xw = ctx->input(0);
    const Tensor& zr = ctx->input(1);
    const Tensor& h = ctx->input(2);
    const Tensor& c = ctx->input(3);
    const Tensor& keep = ctx->input(4);
    OP_REQUIRES(ctx, c.dims() == 2 && h.shape() == c.shape(), absl::InvalidArgumentError("h and c must be [hidden, batch]"));
    const int64_t hidden = c.dim_size(0), batch = c.dim_size(1), n = hidden * batch;
    OP_REQUIRES(ctx, xw.shape() == TensorShape({4 * hidden, batch}) && zr.shape() == xw.shape(),
                absl::InvalidArgumentError("xw and zr must be [4 * hidden, batch] for c [hidden, batch]"));
    OP_REQUIRES(ctx, keep.shape() == TensorShape({batch}), absl::InvalidArgumentError("keep must be [batch]"));
    Tensor *h_new, *c_new;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, c.shape(), &h_new));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, c.shape(), &c_new));
    T* h_low = low_output<T>(ctx, 1, c.shape());
    if (!ctx->status().ok()) return;
    const float* x = xw.flat<float>().data();
    const T* r = zr.flat<T>().data();
    const float* hp = h.flat<float>().data();
    const float* cp = c.flat<float>().data();
    const bool* kp = keep.flat<bool>().data();
    float* ho = h_new->flat<float>().data();
    float* co = c_new->flat<float>().data();

    parallel(ctx, n, [&](int64_t begin, int64_t end) {
      const int64_t len = end - begin;
      auto gate = [&](int k) -> Eigen::ArrayXf {
        return ConstFloats(x + k * n + begin, len) + as_float(r + k * n + begin, len);
      };
      const Eigen::ArrayXf c_out = gate(1).logistic() * ConstFloats(cp + begin, len) + gate(0).logistic() * gate(2).tanh();
      Eigen::ArrayXf h_out = gate(3).logistic() * c_out.tanh();
      Floats(co + begin, len) = c_out;
      Floats(ho + begin, len) = h_out;
      for (int64_t k = begin; k < end; ++k) {
        if (!kp[k % batch]) {
          ho[k] = hp[k];
          co[k] = cp[k];
        }
      }
      store(h_low + begin, Eigen::ArrayXf(Floats(ho + begin, len)));
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("CharlmColumns").Device(::tensorflow::DEVICE_CPU), ColumnsOp);

#define CHARLM_REGISTER(T)                                                                          \
  REGISTER_KERNEL_BUILDER(Name("CharlmLstmForward").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
                          LstmForwardOp<T>);                                                        \
  REGISTER_KERNEL_BUILDER(Name("CharlmLstmBackward").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
                          LstmBackwardOp<T>);                                                       \
  REGISTER_KERNEL_BUILDER(Name("CharlmLstmStep").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
                          LstmStepOp<T>);
CHARLM_REGISTER(float)
CHARLM_REGISTER(::tensorflow::bfloat16)
#undef CHARLM_REGISTER

}  // namespace charlm
