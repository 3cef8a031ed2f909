#include "backend/cuda/quant_fusion.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/quant_ops.h"
#include "core/error.h"
#include "model/weights.h"

namespace qed::cuda {

FusedFp8 fuse_fp8_parts(const std::vector<QuantPart>& parts, int cols) {
  if (parts.empty()) fail("fuse_fp8_parts: no parts");
  FusedFp8 out;
  bool any_channel = false, all_same = true;
  float max_scale = 0.0f;
  for (const QuantPart& p : parts) {
    if (p.scales.size() != 1 && p.scales.size() != size_t(p.rows)) {
      fail("fuse_fp8_parts: {} scales for a part of {} rows", p.scales.size(), p.rows);
    }
    any_channel |= p.scales.size() != 1;
    all_same &= p.scales.size() == 1 && p.scales[0] == parts[0].scales[0];
    for (float s : p.scales) max_scale = std::max(max_scale, s);
  }
  for (const QuantPart& p : parts) {
    const size_t n = size_t(p.rows) * size_t(cols);
    const size_t at = out.codes.size();
    out.codes.insert(out.codes.end(), p.codes, p.codes + n);
    if (any_channel) {
      for (int r = 0; r < p.rows; ++r) out.scales.push_back(p.scales.size() == 1 ? p.scales[0] : p.scales[size_t(r)]);
    } else if (!all_same && p.scales[0] != max_scale) {
      std::vector<float> values(n);
      cpu::dequantize_fp8_per_tensor(p.codes, n, p.scales[0], values.data());
      cpu::quantize_fp8_per_tensor(values.data(), n, max_scale, out.codes.data() + at);
    }
  }
  out.per_channel = any_channel;
  if (!any_channel) out.scales = {all_same ? parts[0].scales[0] : max_scale};
  return out;
}

std::vector<float> fuse_channel_scales(const std::vector<QuantPart>& parts) {
  std::vector<float> out;
  for (const QuantPart& p : parts) {
    if (p.scales.size() != 1 && p.scales.size() != size_t(p.rows)) {
      fail("fuse_channel_scales: {} scales for a part of {} rows", p.scales.size(), p.rows);
    }
    for (int r = 0; r < p.rows; ++r) out.push_back(p.scales.size() == 1 ? p.scales[0] : p.scales[size_t(r)]);
  }
  return out;
}

std::vector<float> scale_values(const TensorInfo& scale) {
  std::vector<float> values = tensor_to_f32(scale);
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i]) || values[i] <= 0.0f) {
      fail("scale '{}' [{}] is {}, expected a finite positive value", scale.name, i, values[i]);
    }
  }
  return values;
}

}  // namespace qed::cuda
