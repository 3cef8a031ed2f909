#include "backend/cuda/env_switch.h"

#include <cstdlib>
#include <cstring>

namespace qed::cuda {

bool env_flag(const char* name, bool fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::strcmp(value, "0") != 0;
}

std::string env_string(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::atoi(value);
}

}  // namespace qed::cuda
