// The ACT halting rule for one row, shared by the CPU kernel (act.cpp) and the CUDA kernel (cuda/act.cu).
// Plain C++ (no ATen, no CUDA headers), so that act.cu still compiles standalone with nvcc.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define HRM_FAST_HOST_DEVICE __host__ __device__
#else
#define HRM_FAST_HOST_DEVICE
#endif

namespace hrm_fast {

// After a segment: s = steps + 1 (the new count); halted = s >= max_steps; with use_q (training, max_steps > 1) also
// when q_halt > q_continue, but not before min_steps_draw steps when explore_draw < prob (prob rounded to fp32, as
// the reference compares).
HRM_FAST_HOST_DEVICE inline bool act_halts(int32_t s, int32_t max_steps, bool use_q, float q_halt, float q_continue,
                                           float explore_draw, int32_t min_steps_draw, float prob) {
  bool h = s >= max_steps;
  if (use_q) {
    const int32_t min_halt = explore_draw < prob ? min_steps_draw : 0;
    h = (h || q_halt > q_continue) && s >= min_halt;
  }
  return h;
}

}  // namespace hrm_fast
