#include "backend/cuda/device.h"

#include <string>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"

namespace qed::cuda {

std::vector<DeviceInfo> list_devices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return {};
  }
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    QED_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
    DeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.sm_major = prop.major;
    info.sm_minor = prop.minor;
    info.total_memory = prop.totalGlobalMem;
    info.multiprocessors = prop.multiProcessorCount;
    QED_CUDA_CHECK(cudaSetDevice(i));
    size_t free_bytes = 0, total_bytes = 0;
    QED_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    info.free_memory = free_bytes;
    devices.push_back(info);
  }
  return devices;
}

DeviceCaps device_caps(int device) {
  DeviceCaps caps;
  QED_CUDA_CHECK(cudaDeviceGetAttribute(&caps.sm_major, cudaDevAttrComputeCapabilityMajor, device));
  QED_CUDA_CHECK(cudaDeviceGetAttribute(&caps.sm_minor, cudaDevAttrComputeCapabilityMinor, device));
  QED_CUDA_CHECK(cudaDeviceGetAttribute(&caps.multiprocessors, cudaDevAttrMultiProcessorCount, device));
  return caps;
}

namespace {
std::string version_string(cudaError_t status, int version) {
  if (status != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}
}  // namespace

std::string driver_cuda_version() {
  int version = 0;
  const cudaError_t status = cudaDriverGetVersion(&version);
  return version_string(status, version);
}

std::string runtime_cuda_version() {
  int version = 0;
  const cudaError_t status = cudaRuntimeGetVersion(&version);
  return version_string(status, version);
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) QED_CUDA_CHECK(cudaMalloc(&data_, bytes));
}

DeviceBuffer::~DeviceBuffer() {
  if (data_) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::upload(const void* host, size_t bytes) {
  if (bytes > bytes_) throw Error("DeviceBuffer::upload: more bytes than the buffer holds");
  QED_CUDA_CHECK(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice));
}

void DeviceBuffer::download(void* host, size_t bytes) const {
  if (bytes > bytes_) throw Error("DeviceBuffer::download: more bytes than the buffer holds");
  QED_CUDA_CHECK(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost));
}

}  // namespace qed::cuda
