// Binds the CUDA kernels of cuda/act.cu to the hrm_fast ops (built only in CUDA builds).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "act_checks.h"
#include "cuda/act.h"

namespace hrm_fast {
namespace {

DataRows rows_of(const at::Tensor& cur, const at::Tensor& fresh) {
  const int64_t row_bytes = cur.size(0) == 0 ? 0 : cur.numel() / cur.size(0) * cur.element_size();
  return DataRows{cur.data_ptr(), fresh.data_ptr(), row_bytes};
}

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "hrm_fast ", what, ": CUDA launch failed: ", cudaGetErrorString(err));
}

void act_reset_cuda(const at::Tensor& z_H, const at::Tensor& z_L, const at::Tensor& steps, const at::Tensor& inputs,
                    const at::Tensor& labels, const at::Tensor& puzzle_identifiers, const at::Tensor& halted,
                    const at::Tensor& H_init, const at::Tensor& L_init, const at::Tensor& new_inputs,
                    const at::Tensor& new_labels, const at::Tensor& new_puzzle_identifiers) {
  check_act_reset(z_H, z_L, steps, inputs, labels, puzzle_identifiers, halted, H_init, L_init, new_inputs, new_labels,
                  new_puzzle_identifiers);
  const c10::cuda::CUDAGuard guard(z_H.device());
  check_cuda(launch_act_reset(z_H.data_ptr(), z_L.data_ptr(), H_init.data_ptr(), L_init.data_ptr(), z_H.size(0),
                              z_H.size(1), z_H.size(2) * z_H.element_size(), steps.data_ptr<int32_t>(),
                              halted.data_ptr<bool>(), rows_of(inputs, new_inputs), rows_of(labels, new_labels),
                              rows_of(puzzle_identifiers, new_puzzle_identifiers),
                              c10::cuda::getCurrentCUDAStream().stream()),
             "act_reset");
}

void act_halt_cuda(const at::Tensor& steps, const at::Tensor& halted, const at::Tensor& q_halt,
                   const at::Tensor& q_continue, const at::Tensor& explore_draw, const at::Tensor& min_steps_draw,
                   int64_t max_steps, double exploration_prob, bool training) {
  check_act_halt(steps, halted, q_halt, q_continue, explore_draw, min_steps_draw, max_steps, exploration_prob);
  const c10::cuda::CUDAGuard guard(steps.device());
  check_cuda(launch_act_halt(steps.data_ptr<int32_t>(), halted.data_ptr<bool>(), q_halt.data_ptr<float>(),
                             q_continue.data_ptr<float>(), explore_draw.data_ptr<float>(),
                             min_steps_draw.data_ptr<int32_t>(), steps.size(0), static_cast<int32_t>(max_steps),
                             static_cast<float>(exploration_prob), training && max_steps > 1,
                             c10::cuda::getCurrentCUDAStream().stream()),
             "act_halt");
}

}  // namespace

TORCH_LIBRARY_IMPL(hrm_fast, CUDA, m) {
  m.impl("act_reset", &act_reset_cuda);
  m.impl("act_halt", &act_halt_cuda);
}

}  // namespace hrm_fast
