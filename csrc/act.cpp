// The ACT carry/halting ops: schema (TORCH_LIBRARY "hrm_fast") and the CPU kernels.
// The CUDA kernels are registered by act_cuda.cpp (built only in CUDA builds).
#include <Python.h>

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>

#include "act_checks.h"
#include "act_rule.h"

namespace hrm_fast {
namespace {

// Copy row b of `fresh` into row b of `cur` (both contiguous, same shape/dtype).
inline void copy_row(const at::Tensor& cur, const at::Tensor& fresh, int64_t b) {
  const int64_t row_bytes = cur.numel() / cur.size(0) * cur.element_size();
  std::memcpy(static_cast<char*>(cur.data_ptr()) + b * row_bytes,
              static_cast<const char*>(fresh.data_ptr()) + b * row_bytes, row_bytes);
}

// Fill row b of z [B, S, D] with the vector init [D] repeated S times.
inline void fill_row(const at::Tensor& z, const at::Tensor& init, int64_t b) {
  const int64_t vec_bytes = init.numel() * init.element_size();
  const int64_t seq = z.size(1);
  char* row = static_cast<char*>(z.data_ptr()) + b * seq * vec_bytes;
  const char* src = static_cast<const char*>(init.data_ptr());
  for (int64_t s = 0; s < seq; ++s) std::memcpy(row + s * vec_bytes, src, vec_bytes);
}

void act_reset_cpu(const at::Tensor& z_H, const at::Tensor& z_L, const at::Tensor& steps, const at::Tensor& inputs,
                   const at::Tensor& labels, const at::Tensor& puzzle_identifiers, const at::Tensor& halted,
                   const at::Tensor& H_init, const at::Tensor& L_init, const at::Tensor& new_inputs,
                   const at::Tensor& new_labels, const at::Tensor& new_puzzle_identifiers) {
  check_act_reset(z_H, z_L, steps, inputs, labels, puzzle_identifiers, halted, H_init, L_init, new_inputs, new_labels,
                  new_puzzle_identifiers);
  const bool* halted_p = halted.data_ptr<bool>();
  int32_t* steps_p = steps.data_ptr<int32_t>();
  // Rows are independent; untouched rows cost one flag read.
  at::parallel_for(0, z_H.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      if (!halted_p[b]) continue;
      fill_row(z_H, H_init, b);
      fill_row(z_L, L_init, b);
      steps_p[b] = 0;
      copy_row(inputs, new_inputs, b);
      copy_row(labels, new_labels, b);
      copy_row(puzzle_identifiers, new_puzzle_identifiers, b);
    }
  });
}

void act_halt_cpu(const at::Tensor& steps, const at::Tensor& halted, const at::Tensor& q_halt,
                  const at::Tensor& q_continue, const at::Tensor& explore_draw, const at::Tensor& min_steps_draw,
                  int64_t max_steps, double exploration_prob, bool training) {
  check_act_halt(steps, halted, q_halt, q_continue, explore_draw, min_steps_draw, max_steps, exploration_prob);
  int32_t* steps_p = steps.data_ptr<int32_t>();
  bool* halted_p = halted.data_ptr<bool>();
  const float* qh = q_halt.data_ptr<float>();
  const float* qc = q_continue.data_ptr<float>();
  const float* draw = explore_draw.data_ptr<float>();
  const int32_t* min_steps = min_steps_draw.data_ptr<int32_t>();
  const bool use_q = training && max_steps > 1;
  // Same float comparison as the reference: the probability is rounded to fp32 first.
  const float prob = static_cast<float>(exploration_prob);
  for (int64_t b = 0; b < steps.size(0); ++b) {
    const int32_t s = steps_p[b] + 1;
    steps_p[b] = s;
    halted_p[b] = act_halts(s, static_cast<int32_t>(max_steps), use_q, qh[b], qc[b], draw[b], min_steps[b], prob);
  }
}

}  // namespace

TORCH_LIBRARY(hrm_fast, m) {
  m.def(
      "act_reset(Tensor(a!) z_H, Tensor(b!) z_L, Tensor(c!) steps, Tensor(d!) inputs, Tensor(e!) labels, "
      "Tensor(f!) puzzle_identifiers, Tensor halted, Tensor H_init, Tensor L_init, Tensor new_inputs, "
      "Tensor new_labels, Tensor new_puzzle_identifiers) -> ()");
  m.def(
      "act_halt(Tensor(a!) steps, Tensor(b!) halted, Tensor q_halt, Tensor q_continue, Tensor explore_draw, "
      "Tensor min_steps_draw, int max_steps, float exploration_prob, bool training) -> ()");
}

TORCH_LIBRARY_IMPL(hrm_fast, CPU, m) {
  m.impl("act_reset", &act_reset_cpu);
  m.impl("act_halt", &act_halt_cpu);
}

}  // namespace hrm_fast

// `import hrm_fast._C` loads this library, which runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "hrm_fast C++/CUDA ops (torch.ops.hrm_fast)",
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
