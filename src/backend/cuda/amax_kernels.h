#pragma once
// max |x| over a strided bf16 matrix, accumulated into a device slot with atomicMax: the calibration observer's
// only kernel (qed quantize). Nothing is read back here, so a whole forward records without a host sync.
#include <cuda_runtime.h>

#include <cstdint>

namespace qed::cuda {

// *slot = max(*slot, bits of max |x[r * row_stride + c]|) for r < rows, c < cols. The slot holds the fp32 bit
// pattern of a non-negative float: for those, integer order is float order, so an integer atomicMax is a float max
// (and a NaN, whose magnitude bits sit above +inf's, wins and reaches the host, which refuses it). Zero the slot
// (all bits 0 = +0.0f) before the first call.
void accumulate_amax_bf16(const uint16_t* x, int rows, int cols, int row_stride, uint32_t* slot, cudaStream_t stream);

}  // namespace qed::cuda
