#pragma once
// Device discovery and a typed owning device buffer.
#include <cstddef>
#include <string>
#include <vector>

namespace qed::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0;
  int sm_minor = 0;
  size_t total_memory = 0;
  size_t free_memory = 0;
  int multiprocessors = 0;
};

// Empty when no driver/GPU is present (CI): callers and tests skip cleanly.
std::vector<DeviceInfo> list_devices();

// What the backend's dispatch needs of a device (compute capability, SM count), read once by its constructor and
// handed to what needs it (Gemm), so no part queries the device again.
struct DeviceCaps {
  int sm_major = 0;
  int sm_minor = 0;
  int multiprocessors = 0;
  int sm() const { return sm_major * 10 + sm_minor; }  // 90 for an H100/H200
};
DeviceCaps device_caps(int device);

// "13.0"-style versions: the CUDA version the driver supports and the runtime this binary uses ("" if unknown).
std::string driver_cuda_version();
std::string runtime_cuda_version();

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  void upload(const void* host, size_t bytes);
  void download(void* host, size_t bytes) const;

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace qed::cuda
