// Launchers for the ACT carry kernels. Plain C++ types only, so that act.cu needs nothing
// but the CUDA runtime headers and compiles standalone with nvcc.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace hrm_fast {

// A current-data buffer [B, ...] and the new batch's twin, as raw bytes.
struct DataRows {
  void* current;
  const void* fresh;
  int64_t row_bytes;
};

// For rows b with halted[b]: z_H[b, s, :] = H_init and z_L[b, s, :] = L_init for every s, steps[b] = 0,
// and inputs/labels/puzzle_identifiers row b copied from the new batch.
// z_H, z_L: [batch, seq, vec_bytes] bytes (any element type); inits: [vec_bytes] bytes.
cudaError_t launch_act_reset(void* z_H, void* z_L, const void* H_init, const void* L_init, int64_t batch, int64_t seq,
                             int64_t vec_bytes, int32_t* steps, const bool* halted, DataRows inputs, DataRows labels,
                             DataRows puzzle_identifiers, cudaStream_t stream);

// steps += 1; halted = steps >= max_steps; if use_q: halted = (halted | q_halt > q_continue) & steps >= min_halt
// with min_halt = explore_draw < prob ? min_steps_draw : 0.
cudaError_t launch_act_halt(int32_t* steps, bool* halted, const float* q_halt, const float* q_continue,
                            const float* explore_draw, const int32_t* min_steps_draw, int64_t batch, int32_t max_steps,
                            float prob, bool use_q, cudaStream_t stream);

}  // namespace hrm_fast
