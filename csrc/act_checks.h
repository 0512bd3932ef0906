// Argument validation shared by the CPU and CUDA implementations of the ACT ops.
#pragma once

#include <ATen/ATen.h>

namespace hrm_fast {

inline void check_same_device(const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), "hrm_fast act op: ", name, " is on ", t.device(),
              " but z_H/steps are on ", ref.device());
}

inline void check_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_contiguous(), "hrm_fast act op: ", name, " must be contiguous (got strides ", t.strides(), ")");
}

inline void check_rows(const at::Tensor& t, int64_t batch, const char* name) {
  TORCH_CHECK(t.dim() >= 1 && t.size(0) == batch, "hrm_fast act op: ", name, " must have ", batch,
              " rows (got shape ", t.sizes(), ")");
}

inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype, "hrm_fast act op: ", name, " must be ", dtype, " (got ", t.scalar_type(), ")");
}

// A current-data buffer and the new batch's twin: same shape and dtype, [B, ...], contiguous.
inline void check_data_pair(const at::Tensor& ref, const at::Tensor& cur, const at::Tensor& fresh, int64_t batch,
                            const char* name) {
  check_same_device(ref, cur, name);
  check_same_device(ref, fresh, name);
  check_contiguous(cur, name);
  check_contiguous(fresh, name);
  check_rows(cur, batch, name);
  TORCH_CHECK(cur.sizes() == fresh.sizes(), "hrm_fast act_reset: ", name, " has shape ", cur.sizes(),
              " but the new batch's has ", fresh.sizes());
  TORCH_CHECK(cur.scalar_type() == fresh.scalar_type(), "hrm_fast act_reset: ", name, " is ", cur.scalar_type(),
              " but the new batch's is ", fresh.scalar_type());
}

inline void check_act_reset(const at::Tensor& z_H, const at::Tensor& z_L, const at::Tensor& steps,
                            const at::Tensor& inputs, const at::Tensor& labels, const at::Tensor& puzzle_identifiers,
                            const at::Tensor& halted, const at::Tensor& H_init, const at::Tensor& L_init,
                            const at::Tensor& new_inputs, const at::Tensor& new_labels,
                            const at::Tensor& new_puzzle_identifiers) {
  TORCH_CHECK(z_H.dim() == 3, "hrm_fast act_reset: z_H must be [B, S, D] (got shape ", z_H.sizes(), ")");
  TORCH_CHECK(z_L.sizes() == z_H.sizes(), "hrm_fast act_reset: z_L has shape ", z_L.sizes(), " but z_H has ",
              z_H.sizes());
  TORCH_CHECK(at::isFloatingType(z_H.scalar_type()), "hrm_fast act_reset: z_H must be a float tensor (got ",
              z_H.scalar_type(), ")");
  check_dtype(z_L, z_H.scalar_type(), "z_L");
  const int64_t batch = z_H.size(0), hidden = z_H.size(2);
  for (const auto* p : {&H_init, &L_init}) {
    const char* name = p == &H_init ? "H_init" : "L_init";
    TORCH_CHECK(p->dim() == 1 && p->size(0) == hidden, "hrm_fast act_reset: ", name, " must be [", hidden,
                "] (got shape ", p->sizes(), ")");
    check_dtype(*p, z_H.scalar_type(), name);
    check_contiguous(*p, name);
    check_same_device(z_H, *p, name);
  }
  check_contiguous(z_H, "z_H");
  check_contiguous(z_L, "z_L");
  check_same_device(z_H, z_L, "z_L");
  for (const auto* p : {&steps, &halted}) {
    const char* name = p == &steps ? "steps" : "halted";
    TORCH_CHECK(p->dim() == 1 && p->size(0) == batch, "hrm_fast act_reset: ", name, " must be [", batch,
                "] (got shape ", p->sizes(), ")");
    check_contiguous(*p, name);
    check_same_device(z_H, *p, name);
  }
  check_dtype(steps, at::kInt, "steps");
  check_dtype(halted, at::kBool, "halted");
  check_data_pair(z_H, inputs, new_inputs, batch, "inputs");
  check_data_pair(z_H, labels, new_labels, batch, "labels");
  check_data_pair(z_H, puzzle_identifiers, new_puzzle_identifiers, batch, "puzzle_identifiers");
}

inline void check_act_halt(const at::Tensor& steps, const at::Tensor& halted, const at::Tensor& q_halt,
                           const at::Tensor& q_continue, const at::Tensor& explore_draw,
                           const at::Tensor& min_steps_draw, int64_t max_steps, double exploration_prob) {
  TORCH_CHECK(steps.dim() == 1, "hrm_fast act_halt: steps must be [B] (got shape ", steps.sizes(), ")");
  const int64_t batch = steps.size(0);
  TORCH_CHECK(max_steps >= 1, "hrm_fast act_halt: max_steps must be >= 1 (got ", max_steps, ")");
  TORCH_CHECK(exploration_prob >= 0.0 && exploration_prob <= 1.0,
              "hrm_fast act_halt: exploration_prob must be in [0, 1] (got ", exploration_prob, ")");
  const at::Tensor* all[] = {&steps, &halted, &q_halt, &q_continue, &explore_draw, &min_steps_draw};
  const char* names[] = {"steps", "halted", "q_halt", "q_continue", "explore_draw", "min_steps_draw"};
  const at::ScalarType dtypes[] = {at::kInt, at::kBool, at::kFloat, at::kFloat, at::kFloat, at::kInt};
  for (int i = 0; i < 6; ++i) {
    TORCH_CHECK(all[i]->dim() == 1 && all[i]->size(0) == batch, "hrm_fast act_halt: ", names[i], " must be [", batch,
                "] (got shape ", all[i]->sizes(), ")");
    check_dtype(*all[i], dtypes[i], names[i]);
    check_contiguous(*all[i], names[i]);
    check_same_device(steps, *all[i], names[i]);
  }
}

}  // namespace hrm_fast
