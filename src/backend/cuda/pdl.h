#pragma once
// Host half of programmatic dependent launch (pdl.cuh has the device half and launch_kernel).

namespace qed::cuda {

// Whether launch_kernel(..., pdl = true) adds the PDL attribute: set by the CUDA backend at construction (device
// compute capability >= 9.0 and not turned off with QED_PDL=0); false by default, so kernel tests launch as before
// unless they turn it on. Process-wide: PDL only relaxes the order between kernels of one stream, so backends on
// other devices are unaffected by it.
bool pdl_enabled();
void set_pdl_enabled(bool enabled);

}  // namespace qed::cuda
