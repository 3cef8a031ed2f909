// Safetensors: what the writer produces reads back bit for bit, and every malformed header is refused with a
// message that names the file and what is wrong.
#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/error.h"
#include "temp_dir.h"

namespace qed {
namespace {

// A safetensors image: little-endian header length, the header text, then `data_bytes` bytes 0, 1, 2, ...
std::string image(const std::string& header, size_t data_bytes = 0) {
  std::string bytes(8, '\0');
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = char((length >> (8 * i)) & 0xFF);
  bytes += header;
  for (size_t i = 0; i < data_bytes; ++i) bytes += char(i & 0xFF);
  return bytes;
}

SafetensorsHeader parse(const std::string& bytes) {
  return parse_safetensors(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), "x.safetensors");
}

// The error message parse() throws, or "" if it accepted the bytes.
std::string parse_error(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

testing::AssertionResult rejected_with(const std::string& bytes, const std::string& expected) {
  std::string message = parse_error(bytes);
  if (message.empty()) return testing::AssertionFailure() << "accepted, expected error containing: " << expected;
  if (message.rfind("x.safetensors: ", 0) != 0) {
    return testing::AssertionFailure() << "error does not start with the file name: " << message;
  }
  if (message.find(expected) == std::string::npos) {
    return testing::AssertionFailure() << "error '" << message << "' does not contain '" << expected << "'";
  }
  return testing::AssertionSuccess();
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, size_t begin,
                  size_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

TEST(Safetensors, ParsesTensorsAndPointsIntoTheData) {
  std::string bytes = image("{" + entry("w", "F32", "[2,3]", 8, 32) + "," + entry("b", "BF16", "[4]", 0, 8) + "}", 32);
  SafetensorsHeader header = parse(bytes);
  ASSERT_EQ(header.tensors.size(), 2u);
  const TensorInfo& w = header.tensors.at("w");
  EXPECT_EQ(w.dtype, DType::F32);
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w.numel(), 6);
  EXPECT_EQ(w.offset, 8u);
  EXPECT_EQ(w.nbytes, 24u);
  EXPECT_EQ(header.data_start, 8 + bytes.size() - 8 - 32);
  EXPECT_EQ(w.data, reinterpret_cast<const unsigned char*>(bytes.data()) + header.data_start + 8);
  EXPECT_EQ(w.data[0], 8);  // the data section holds 0, 1, 2, ...
}

TEST(Safetensors, ParsesEveryDtype) {
  std::string header = "{" + entry("a", "BF16", "[1]", 0, 2) + "," + entry("b", "F16", "[1]", 2, 4) + "," +
                       entry("c", "F32", "[1]", 4, 8) + "," + entry("d", "F8_E4M3", "[1]", 8, 9) + "," +
                       entry("e", "I8", "[1]", 9, 10) + "," + entry("f", "U8", "[1]", 10, 11) + "," +
                       entry("g", "I32", "[1]", 12, 16) + "," + entry("h", "I64", "[1]", 16, 24) + "}";
  SafetensorsHeader parsed = parse(image(header, 24));
  EXPECT_EQ(parsed.tensors.at("a").dtype, DType::BF16);
  EXPECT_EQ(parsed.tensors.at("b").dtype, DType::F16);
  EXPECT_EQ(parsed.tensors.at("c").dtype, DType::F32);
  EXPECT_EQ(parsed.tensors.at("d").dtype, DType::F8_E4M3);
  EXPECT_EQ(parsed.tensors.at("e").dtype, DType::I8);
  EXPECT_EQ(parsed.tensors.at("f").dtype, DType::U8);
  EXPECT_EQ(parsed.tensors.at("g").dtype, DType::I32);
  EXPECT_EQ(parsed.tensors.at("h").dtype, DType::I64);
}

TEST(Safetensors, ScalarHasOneElementAndEmptyTensorNoBytes) {
  SafetensorsHeader header = parse(image("{" + entry("s", "F32", "[]", 0, 4) + "," + entry("e", "F32", "[0,5]", 4, 4) +
                                             "," + entry("z", "F16", "[3,0]", 2, 2) + "}",
                                         4));
  EXPECT_EQ(header.tensors.at("s").numel(), 1);
  EXPECT_EQ(header.tensors.at("e").numel(), 0);
  EXPECT_EQ(header.tensors.at("e").nbytes, 0u);
  // A zero-byte range inside another tensor's bytes owns nothing, so it is no overlap.
  EXPECT_EQ(header.tensors.at("z").nbytes, 0u);
}

TEST(Safetensors, ReadsMetadataStrings) {
  SafetensorsHeader header = parse(image(R"({"__metadata__":{"format":"pt","note":"x"}})"));
  EXPECT_TRUE(header.tensors.empty());
  EXPECT_EQ(header.metadata.at("format"), "pt");
  EXPECT_EQ(header.metadata.at("note"), "x");
}

TEST(Safetensors, AcceptsTrailingSpacePadding) {
  EXPECT_EQ(parse(image("{" + entry("w", "U8", "[3]", 0, 3) + "}     ", 3)).tensors.size(), 1u);
}

TEST(Safetensors, RejectsFileShorterThanLengthPrefix) {
  EXPECT_TRUE(rejected_with("abc", "too small"));
}

TEST(Safetensors, RejectsHeaderLengthOver100MB) {
  std::string bytes = image("{}");
  uint64_t huge = 100'000'001;
  for (int i = 0; i < 8; ++i) bytes[i] = char((huge >> (8 * i)) & 0xFF);
  EXPECT_TRUE(rejected_with(bytes, "exceeds the 100 MB limit"));
  for (int i = 0; i < 8; ++i) bytes[i] = char(0xFF);  // 2^64-1: must not wrap around in bounds arithmetic
  EXPECT_TRUE(rejected_with(bytes, "exceeds the 100 MB limit"));
}

TEST(Safetensors, RejectsHeaderLengthBeyondFileSize) {
  std::string bytes = image("{}");
  bytes[0] = 3;
  EXPECT_TRUE(rejected_with(bytes, "header length 3 exceeds file size 10"));
}

TEST(Safetensors, RejectsInvalidJson) {
  EXPECT_TRUE(rejected_with(image("{\"w\":"), "header is not valid JSON"));
}

TEST(Safetensors, RejectsNumberTooLargeForJsonAsInvalidJson) {
  // nlohmann reports this as out_of_range, not parse_error (found by fuzz_safetensors).
  EXPECT_TRUE(rejected_with(image(R"({"w":{"dtype":1e99999}})"), "header is not valid JSON"));
}

TEST(Safetensors, RejectsNonObjectHeader) {
  EXPECT_TRUE(rejected_with(image("[1,2]"), "header must be a JSON object, got array"));
}

TEST(Safetensors, RejectsNonObjectEntry) {
  EXPECT_TRUE(rejected_with(image(R"({"w":3})"), "tensor 'w': entry must be an object"));
}

TEST(Safetensors, RejectsMissingOrMistypedDtype) {
  EXPECT_TRUE(rejected_with(image(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), "tensor 'w': missing 'dtype'"));
  EXPECT_TRUE(rejected_with(image(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
                            "tensor 'w': 'dtype' must be a string"));
}

TEST(Safetensors, RejectsUnknownDtype) {
  EXPECT_TRUE(
      rejected_with(image("{" + entry("w", "F64", "[1]", 0, 8) + "}", 8), "tensor 'w': unsupported dtype 'F64'"));
}

TEST(Safetensors, RejectsMissingOrMistypedShape) {
  EXPECT_TRUE(rejected_with(image(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), "tensor 'w': missing 'shape'"));
  EXPECT_TRUE(rejected_with(image(R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,4]}})", 4),
                            "tensor 'w': 'shape' must be an array"));
  EXPECT_TRUE(rejected_with(image("{" + entry("w", "F32", "[1.5]", 0, 4) + "}", 4), "must be an integer"));
  EXPECT_TRUE(rejected_with(image("{" + entry("w", "F32", "[\"1\"]", 0, 4) + "}", 4), "must be an integer"));
}

TEST(Safetensors, RejectsNegativeDimension) {
  EXPECT_TRUE(rejected_with(image("{" + entry("w", "F32", "[-1]", 0, 4) + "}", 4),
                            "tensor 'w': shape dimension must be non-negative, got -1"));
}

TEST(Safetensors, RejectsMissingOrMalformedDataOffsets) {
  EXPECT_TRUE(rejected_with(image(R"({"w":{"dtype":"F32","shape":[1]}})", 4), "tensor 'w': missing 'data_offsets'"));
  EXPECT_TRUE(rejected_with(image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
                            "'data_offsets' must be an array [begin, end]"));
  EXPECT_TRUE(rejected_with(image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", 4),
                            "data_offsets end must be non-negative"));
}

TEST(Safetensors, RejectsBeginAfterEnd) {
  EXPECT_TRUE(rejected_with(image("{" + entry("w", "F32", "[0]", 4, 0) + "}", 4), "data_offsets begin 4 > end 0"));
}

TEST(Safetensors, RejectsShapeThatDisagreesWithByteRange) {
  EXPECT_TRUE(rejected_with(image("{" + entry("w", "BF16", "[2,3]", 0, 8) + "}", 8),
                            "tensor 'w': shape [2, 3] of BF16 needs 12 bytes but data_offsets [0, 8] hold 8"));
}

TEST(Safetensors, RejectsShapeWhoseByteCountOverflows) {
  // 2^32 * 2^32 elements wraps to 0 in 64 bits; a naive product would accept the empty range.
  EXPECT_TRUE(rejected_with(image("{" + entry("w", "U8", "[4294967296,4294967296]", 0, 0) + "}"), "needs too many"));
  // 2^62 elements of 4 bytes wraps to 0 only in the byte count.
  EXPECT_TRUE(rejected_with(image("{" + entry("w", "F32", "[4611686018427387904]", 0, 0) + "}"), "needs too many"));
}

TEST(Safetensors, RejectsTensorPastEndOfData) {
  EXPECT_TRUE(rejected_with(image("{" + entry("w", "F32", "[2]", 0, 8) + "}", 7),
                            "tensor 'w' extends past end of file (data_offsets end 8 > data size 7)"));
}

TEST(Safetensors, RejectsHugeOffsetsWithoutWrapping) {
  EXPECT_TRUE(rejected_with(
      image("{" + entry("w", "U8", "[1]", 18446744073709551614ull, 18446744073709551615ull) + "}"), "too large"));
}

TEST(Safetensors, RejectsOverlappingTensors) {
  std::string header = "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}";
  EXPECT_TRUE(rejected_with(image(header, 12), "tensors 'a' [0, 8) and 'b' [4, 12) overlap"));
}

TEST(Safetensors, RejectsMetadataThatIsNotAStringMap) {
  EXPECT_TRUE(rejected_with(image(R"({"__metadata__":[1]})"), "'__metadata__' must be an object of strings"));
  EXPECT_TRUE(rejected_with(image(R"({"__metadata__":{"step":3}})"), "'__metadata__' entry 'step' must be a string"));
}

// --- writer ---

TEST(SafetensorsWriter, RoundTripsEveryDtypeAndMetadata) {
  test::TempDir dir;
  std::vector<uint16_t> bf16 = {float_to_bf16(1.5f), float_to_bf16(-2.0f), float_to_bf16(3.25f)};
  std::vector<uint16_t> f16 = {float_to_f16(0.5f), float_to_f16(-0.25f)};
  std::vector<float> f32 = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  std::vector<uint8_t> f8 = {float_to_f8e4m3(448.0f), float_to_f8e4m3(-1.0f)};
  std::vector<int8_t> i8 = {-128, 0, 127};
  std::vector<uint8_t> u8 = {255};
  std::vector<int32_t> i32 = {-7, 7};
  std::vector<int64_t> i64 = {int64_t(1) << 40};
  std::string path = dir.file("t.safetensors");
  write_safetensors(path,
                    {{"bf16", DType::BF16, {3}, bf16.data()},
                     {"f16", DType::F16, {2}, f16.data()},
                     {"f32", DType::F32, {2, 3}, f32.data()},
                     {"f8", DType::F8_E4M3, {2}, f8.data()},
                     {"i8", DType::I8, {3}, i8.data()},
                     {"u8", DType::U8, {1, 1}, u8.data()},
                     {"i32", DType::I32, {2}, i32.data()},
                     {"i64", DType::I64, {}, i64.data()}},
                    {{"format", "pt"}});
  SafetensorsFile file(path);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  ASSERT_EQ(file.tensors().size(), 8u);
  auto same_bytes = [&](const char* name, DType dtype, std::vector<int64_t> shape, const void* expected) {
    const TensorInfo& t = file.tensors().at(name);
    EXPECT_EQ(t.dtype, dtype) << name;
    EXPECT_EQ(t.shape, shape) << name;
    EXPECT_EQ(std::memcmp(t.data, expected, t.nbytes), 0) << name;
  };
  same_bytes("bf16", DType::BF16, {3}, bf16.data());
  same_bytes("f16", DType::F16, {2}, f16.data());
  same_bytes("f32", DType::F32, {2, 3}, f32.data());
  same_bytes("f8", DType::F8_E4M3, {2}, f8.data());
  same_bytes("i8", DType::I8, {3}, i8.data());
  same_bytes("u8", DType::U8, {1, 1}, u8.data());
  same_bytes("i32", DType::I32, {2}, i32.data());
  same_bytes("i64", DType::I64, {}, i64.data());
  EXPECT_EQ(file.tensors().at("bf16").at(2), 3.25f);
  EXPECT_EQ(file.tensors().at("f8").at(0), 448.0f);
}

TEST(SafetensorsWriter, PadsHeaderSoEveryTensorIsAlignedToItsElementSize) {
  test::TempDir dir;
  std::vector<uint8_t> u8 = {1, 2, 3};
  std::vector<float> f32 = {1.0f};
  std::vector<uint16_t> bf16 = {0};
  std::string path = dir.file("t.safetensors");
  write_safetensors(path, {{"a_u8", DType::U8, {3}, u8.data()},
                           {"b_f32", DType::F32, {1}, f32.data()},
                           {"c_bf16", DType::BF16, {1}, bf16.data()}});
  SafetensorsFile file(path);
  for (const auto& [name, info] : file.tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(info.data) % dtype_size(info.dtype), 0u) << name;
    // mmap is page-aligned, so the data section starts 8-aligned iff 8 + header length is a multiple of 8.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(info.data - info.offset) % 8, 0u) << name;
  }
}

TEST(SafetensorsWriter, RejectsDuplicateNames) {
  test::TempDir dir;
  float value = 1.0f;
  EXPECT_THROW(
      write_safetensors(dir.file("t.safetensors"), {{"w", DType::F32, {1}, &value}, {"w", DType::F32, {1}, &value}}),
      Error);
}

TEST(SafetensorsWriter, RejectsReservedName) {
  test::TempDir dir;
  float value = 1.0f;
  EXPECT_THROW(write_safetensors(dir.file("t.safetensors"), {{"__metadata__", DType::F32, {1}, &value}}), Error);
}

TEST(SafetensorsWriter, ErrorNamesUnwritablePath) {
  test::TempDir dir;
  float value = 1.0f;
  std::string path = dir.file("missing/t.safetensors");
  try {
    write_safetensors(path, {{"w", DType::F32, {1}, &value}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qed
