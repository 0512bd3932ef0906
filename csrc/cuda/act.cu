// CUDA kernels for the ACT carry update. Device code uses only the CUDA runtime headers
// (no torch), so `nvcc -c act.cu` works standalone; act_cuda.cpp binds it to torch.
//
// The reset is a pure byte copy, so the kernels are templated on the copy unit (1..16 bytes),
// not on the tensor dtype: fp32, bf16, fp16 (and integer data rows) all share one code path.
#include "act.h"
#include "../act_rule.h"

#include <initializer_list>

namespace hrm_fast {
namespace {

constexpr int kThreads = 256;

// Widest unit (16, 8, 4, 2, 1 bytes) that divides `bytes` and the addresses of every pointer.
inline int copy_unit(int64_t bytes, std::initializer_list<const void*> ptrs) {
  for (int unit = 16; unit > 1; unit /= 2) {
    bool ok = bytes % unit == 0;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % unit == 0;
    if (ok) return unit;
  }
  return 1;
}

template <int N>
struct Bytes {
  alignas(N) unsigned char v[N];
};

// grid: (chunks, batch, 2). blockIdx.z picks z_H or z_L. Non-halted rows exit at once.
template <typename T>
__global__ void reset_state_kernel(T* __restrict__ z_H, T* __restrict__ z_L, const T* __restrict__ H_init,
                                   const T* __restrict__ L_init, int64_t row_units, int64_t vec_units,
                                   const bool* __restrict__ halted) {
  const int64_t b = blockIdx.y;
  if (!halted[b]) return;
  T* row = (blockIdx.z == 0 ? z_H : z_L) + b * row_units;
  const T* init = blockIdx.z == 0 ? H_init : L_init;
  for (int64_t u = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; u < row_units; u += (int64_t)gridDim.x * blockDim.x) {
    row[u] = init[u % vec_units];
  }
}

template <typename T>
__device__ void copy_units(void* dst, const void* src, int64_t units) {
  T* d = static_cast<T*>(dst);
  const T* s = static_cast<const T*>(src);
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) d[u] = s[u];
}

__device__ void copy_row_bytes(const DataRows& rows, int64_t b) {
  char* dst = static_cast<char*>(rows.current) + b * rows.row_bytes;
  const char* src = static_cast<const char*>(rows.fresh) + b * rows.row_bytes;
  // Rows are at most a few KB: pick the widest aligned unit at run time.
  const uintptr_t align = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | rows.row_bytes;
  if (align % 16 == 0) {
    copy_units<Bytes<16>>(dst, src, rows.row_bytes / 16);
  } else if (align % 4 == 0) {
    copy_units<uint32_t>(dst, src, rows.row_bytes / 4);
  } else {
    copy_units<unsigned char>(dst, src, rows.row_bytes);
  }
}

// grid: (batch). One block per row: steps and the three data rows.
__global__ void reset_data_kernel(int32_t* __restrict__ steps, const bool* __restrict__ halted, DataRows inputs,
                                  DataRows labels, DataRows puzzle_identifiers) {
  const int64_t b = blockIdx.x;
  if (!halted[b]) return;
  if (threadIdx.x == 0) steps[b] = 0;
  copy_row_bytes(inputs, b);
  copy_row_bytes(labels, b);
  copy_row_bytes(puzzle_identifiers, b);
}

__global__ void halt_kernel(int32_t* __restrict__ steps, bool* __restrict__ halted, const float* __restrict__ q_halt,
                            const float* __restrict__ q_continue, const float* __restrict__ explore_draw,
                            const int32_t* __restrict__ min_steps_draw, int64_t batch, int32_t max_steps, float prob,
                            bool use_q) {
  const int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (b >= batch) return;
  const int32_t s = steps[b] + 1;
  steps[b] = s;
  halted[b] = act_halts(s, max_steps, use_q, q_halt[b], q_continue[b], explore_draw[b], min_steps_draw[b], prob);
}

template <typename T>
cudaError_t launch_reset_state(void* z_H, void* z_L, const void* H_init, const void* L_init, int64_t batch,
                               int64_t seq, int64_t vec_bytes, const bool* halted, cudaStream_t stream) {
  const int64_t vec_units = vec_bytes / sizeof(T);
  const int64_t row_units = seq * vec_units;
  const int64_t chunks = (row_units + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned>(chunks < 1024 ? chunks : 1024), static_cast<unsigned>(batch), 2);
  reset_state_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<T*>(z_H), static_cast<T*>(z_L),
                                                       static_cast<const T*>(H_init), static_cast<const T*>(L_init),
                                                       row_units, vec_units, halted);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_act_reset(void* z_H, void* z_L, const void* H_init, const void* L_init, int64_t batch, int64_t seq,
                             int64_t vec_bytes, int32_t* steps, const bool* halted, DataRows inputs, DataRows labels,
                             DataRows puzzle_identifiers, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  if (seq > 0 && vec_bytes > 0) {
    cudaError_t err;
    switch (copy_unit(vec_bytes, {z_H, z_L, H_init, L_init})) {
      case 16: err = launch_reset_state<Bytes<16>>(z_H, z_L, H_init, L_init, batch, seq, vec_bytes, halted, stream); break;
      case 8: err = launch_reset_state<uint64_t>(z_H, z_L, H_init, L_init, batch, seq, vec_bytes, halted, stream); break;
      case 4: err = launch_reset_state<uint32_t>(z_H, z_L, H_init, L_init, batch, seq, vec_bytes, halted, stream); break;
      case 2: err = launch_reset_state<uint16_t>(z_H, z_L, H_init, L_init, batch, seq, vec_bytes, halted, stream); break;
      default: err = launch_reset_state<unsigned char>(z_H, z_L, H_init, L_init, batch, seq, vec_bytes, halted, stream);
    }
    if (err != cudaSuccess) return err;
  }
  reset_data_kernel<<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(steps, halted, inputs, labels,
                                                                           puzzle_identifiers);
  return cudaGetLastError();
}

cudaError_t launch_act_halt(int32_t* steps, bool* halted, const float* q_halt, const float* q_continue,
                            const float* explore_draw, const int32_t* min_steps_draw, int64_t batch, int32_t max_steps,
                            float prob, bool use_q, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((batch + kThreads - 1) / kThreads);
  halt_kernel<<<blocks, kThreads, 0, stream>>>(steps, halted, q_halt, q_continue, explore_draw, min_steps_draw, batch,
                                               max_steps, prob, use_q);
  return cudaGetLastError();
}

}  // namespace hrm_fast
