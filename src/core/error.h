#pragma once
// One exception type for user-facing failures: its message is printed as one line by the CLI,
// so it must name the file/tensor/field at fault ("model.safetensors: tensor 'x' extends past end of file").
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace qed {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace qed
