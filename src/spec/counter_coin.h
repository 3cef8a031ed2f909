#pragma once
// Counter-based randomness shared by the benchmark drafters (oracle, synthetic acceptance): a coin depends on its key
// only, never on the order or batching of draws; and the "<name>-p<P>" labels that carry their probability.
#include <cstdint>
#include <string>
#include <string_view>

namespace qed::spec {

// splitmix64's finalizer.
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from the top 53 bits: `u < p` is never true for p = 0 and always for p = 1.
inline double unit_interval(uint64_t bits) {
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// P of "<prefix>P" (e.g. prefix "oracle-p", text "oracle-p0.6" → 0.6); -1 when text does not start with prefix.
// Throws qed::Error, naming `what`, when the rest is not a number in [0, 1].
double parse_probability_label(const std::string& text, std::string_view prefix, std::string_view what);

}  // namespace qed::spec
