// Host-side parts of the CUDA backend, checked without a GPU: the packing of a step's inputs (slot mapping across
// block boundaries, custom positions, masks, logits rows, section alignment) and the one-line error when the CUDA
// backend is asked for on a machine without a device.
#include "backend/cuda/step_inputs.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device.h"
#include "core/error.h"

namespace qed::testing {
namespace {

std::vector<int32_t> section(const std::vector<std::byte>& buffer, size_t offset, size_t count) {
  std::vector<int32_t> values(count);
  std::memcpy(values.data(), buffer.data() + offset, count * sizeof(int32_t));
  return values;
}

ForwardBatch two_sequence_batch() {
  ForwardBatch batch;
  SequenceChunk decode_across_boundary;  // slots 14, 15 in block 5; slot 16 in block 2
  decode_across_boundary.tokens = {11, 12, 13};
  decode_across_boundary.num_cached = 14;
  decode_across_boundary.block_table = {5, 2};
  SequenceChunk tree;
  tree.tokens = {21, 22};
  tree.positions = {7, 7};  // siblings share a depth
  tree.block_table = {9};
  tree.attention_mask = {1, 0, 0, 1};
  tree.logits_indices = {1, 0};
  batch.sequences = {decode_across_boundary, tree};
  return batch;
}

TEST(CudaStepInputs, PacksEverySectionOfAMixedBatch) {
  const ForwardBatch batch = two_sequence_batch();
  const cuda::StepSections s = cuda::measure_step(batch);
  EXPECT_EQ(s.rows, 5);
  EXPECT_EQ(s.seqs, 2);
  EXPECT_EQ(s.logits_count, 3);
  EXPECT_EQ(s.max_kv_len, 17);
  std::vector<std::byte> buffer(s.total_bytes, std::byte{0xAB});
  cuda::pack_step(batch, 16, s, buffer.data());
  EXPECT_EQ(section(buffer, s.token_ids, 5), (std::vector<int32_t>{11, 12, 13, 21, 22}));
  EXPECT_EQ(section(buffer, s.positions, 5), (std::vector<int32_t>{14, 15, 16, 7, 7}));
  EXPECT_EQ(section(buffer, s.slot_mapping, 5), (std::vector<int32_t>{5 * 16 + 14, 5 * 16 + 15, 2 * 16, 9 * 16, 145}));
  EXPECT_EQ(section(buffer, s.row_seq, 5), (std::vector<int32_t>{0, 0, 0, 1, 1}));
  EXPECT_EQ(section(buffer, s.seq_q_start, 2), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(section(buffer, s.seq_num_new, 2), (std::vector<int32_t>{3, 2}));
  EXPECT_EQ(section(buffer, s.seq_num_cached, 2), (std::vector<int32_t>{14, 0}));
  EXPECT_EQ(section(buffer, s.seq_block_offset, 2), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(section(buffer, s.block_tables, 3), (std::vector<int32_t>{5, 2, 9}));
  EXPECT_EQ(section(buffer, s.seq_mask_offset, 2), (std::vector<int32_t>{-1, 0}));
  EXPECT_EQ(section(buffer, s.logits_rows, 3), (std::vector<int32_t>{2, 4, 3}));  // last of seq 0; seq 1 as asked
  std::vector<uint8_t> masks(4);
  std::memcpy(masks.data(), buffer.data() + s.masks, 4);
  EXPECT_EQ(masks, (std::vector<uint8_t>{1, 0, 0, 1}));
}

// Every section from token_ids to masks starts 16-byte aligned, after the one before it.
void expect_aligned_in_order(const cuda::StepSections& s) {
  const std::vector<size_t> offsets = {s.token_ids,       s.positions,    s.slot_mapping,   s.row_seq,
                                       s.seq_q_start,     s.seq_num_new,  s.seq_num_cached, s.seq_block_offset,
                                       s.seq_mask_offset, s.block_tables, s.logits_rows,    s.masks};
  for (size_t i = 0; i < offsets.size(); ++i) {
    EXPECT_EQ(offsets[i] % 16, 0u) << "section " << i;
    if (i > 0) {
      EXPECT_GT(offsets[i], offsets[i - 1]) << "section " << i;
    }
  }
}

TEST(CudaStepInputs, SectionsAreSixteenByteAlignedAndDisjoint) {
  const cuda::StepSections s = cuda::measure_step(two_sequence_batch());
  expect_aligned_in_order(s);
  EXPECT_GE(s.total_bytes, s.masks + 4);
}

TEST(CudaStepInputs, RoutesLongCausalChunksToPrefillTilesAndTheRestToDecodeRows) {
  auto chunk = [](int n, int cached, bool tree) {
    SequenceChunk seq;
    seq.tokens.assign(size_t(n), 1);
    seq.num_cached = cached;
    seq.block_table.assign(size_t((cached + n + 15) / 16), 0);
    if (tree) seq.attention_mask.assign(size_t(n) * n, 1);
    return seq;
  };
  ForwardBatch batch;
  batch.sequences = {chunk(1, 500, false),     // decode row 0
                     chunk(130, 20, false),    // rows 1..130: tiles of 64, 64, 2 rows
                     chunk(40, 0, true),       // rows 131..170: tree-masked, however long, stays on the decode kernel
                     chunk(7, 3, false),       // rows 171..177: shorter than min_rows
                     chunk(64, 1000, false)};  // rows 178..241: one full tile over a long prefix
  const cuda::AttentionRouting routing{8, 64};
  EXPECT_FALSE(cuda::routes_to_prefill(batch.sequences[0], routing));
  EXPECT_TRUE(cuda::routes_to_prefill(batch.sequences[1], routing));
  EXPECT_FALSE(cuda::routes_to_prefill(batch.sequences[2], routing));
  EXPECT_FALSE(cuda::routes_to_prefill(batch.sequences[1], cuda::AttentionRouting{}));  // default: nothing routed
  const cuda::StepSections s = cuda::measure_step(batch, routing);
  EXPECT_EQ(s.rows, 242);
  EXPECT_EQ(s.prefill_tile_count, 4);
  EXPECT_EQ(s.decode_row_count, 1 + 40 + 7);
  EXPECT_EQ(s.decode_max_kv_len, 501);
  EXPECT_EQ(s.max_kv_len, 1064);
  EXPECT_EQ(s.decode_rows % 16, 0u);
  EXPECT_EQ(s.prefill_tiles % 16, 0u);
  EXPECT_GE(s.decode_rows, s.masks + 40 * 40);
  EXPECT_GE(s.prefill_tiles, s.decode_rows + 48 * sizeof(int32_t));
  EXPECT_GE(s.total_bytes, s.prefill_tiles + 8 * sizeof(int32_t));
  std::vector<std::byte> buffer(s.total_bytes, std::byte{0xAB});
  cuda::pack_step(batch, 16, s, buffer.data());
  std::vector<int32_t> decode_rows = {0};
  for (int r = 131; r < 178; ++r) decode_rows.push_back(r);
  EXPECT_EQ(section(buffer, s.decode_rows, 48), decode_rows);
  // (sequence, first row), by decreasing keys seen by the tile's last row: 1064, 150, 148, 84.
  EXPECT_EQ(section(buffer, s.prefill_tiles, 8), (std::vector<int32_t>{4, 0, 1, 128, 1, 64, 1, 0}));

  const cuda::StepSections unrouted = cuda::measure_step(batch);
  EXPECT_EQ(unrouted.decode_row_count, unrouted.rows);
  EXPECT_EQ(unrouted.decode_max_kv_len, unrouted.max_kv_len);
  EXPECT_EQ(unrouted.prefill_tile_count, 0);
  const cuda::StepSections graph = cuda::decode_graph_sections(4, 2, 32);
  EXPECT_EQ(graph.decode_row_count, graph.rows);  // graph steps never carry a row list or prefill tiles
  EXPECT_EQ(graph.decode_max_kv_len, 32);
  EXPECT_EQ(graph.prefill_tile_count, 0);
}

TEST(CudaStepInputs, RoutesShortNonPrefillChunksToTheVerifyCtaWhenAsked) {
  auto chunk = [](int n, int cached, bool tree) {
    SequenceChunk seq;
    seq.tokens.assign(size_t(n), 1);
    seq.num_cached = cached;
    seq.block_table.assign(size_t((cached + n + 15) / 16), 0);
    if (tree) seq.attention_mask.assign(size_t(n) * n, 1);
    return seq;
  };
  ForwardBatch batch;
  batch.sequences = {chunk(1, 500, false),   // row 0: decode
                     chunk(4, 100, true),    // rows 1..4: verify (tree)
                     chunk(9, 3, false),     // rows 5..13: more than verify_max_rows, decode
                     chunk(70, 0, false),    // rows 14..83: prefill tiles
                     chunk(8, 900, false)};  // rows 84..91: verify (causal)
  cuda::AttentionRouting routing{64, 64};
  routing.verify_max_rows = 8;
  EXPECT_FALSE(cuda::routes_to_verify(batch.sequences[0], routing));
  EXPECT_TRUE(cuda::routes_to_verify(batch.sequences[1], routing));
  EXPECT_FALSE(cuda::routes_to_verify(batch.sequences[2], routing));
  EXPECT_FALSE(cuda::routes_to_verify(batch.sequences[3], routing));
  EXPECT_FALSE(cuda::routes_to_verify(batch.sequences[1], cuda::AttentionRouting{64, 64}));  // default: none
  const cuda::StepSections s = cuda::measure_step(batch, routing);
  EXPECT_EQ(s.verify_seq_count, 2);
  EXPECT_EQ(s.verify_max_rows, 8);
  EXPECT_EQ(s.verify_max_kv_len, 908);
  EXPECT_EQ(s.decode_row_count, 1 + 9);
  EXPECT_EQ(s.decode_max_kv_len, 500 + 1);
  EXPECT_EQ(s.verify_seqs % 16, 0u);
  EXPECT_GE(s.total_bytes, s.verify_seqs + 2 * sizeof(int32_t));
  std::vector<std::byte> buffer(s.total_bytes, std::byte{0xAB});
  cuda::pack_step(batch, 16, s, buffer.data());
  EXPECT_EQ(section(buffer, s.verify_seqs, 2), (std::vector<int32_t>{1, 4}));
  std::vector<int32_t> decode_rows = {0};
  for (int r = 5; r < 14; ++r) decode_rows.push_back(r);
  EXPECT_EQ(section(buffer, s.decode_rows, 10), decode_rows);

  // Graph verify steps: every slot to the verify CTA, no decode rows.
  const cuda::StepSections graph = cuda::verify_graph_sections(4, 3, 2, 64, true);
  EXPECT_EQ(graph.decode_row_count, 0);
  EXPECT_EQ(graph.verify_seq_count, 4);
  EXPECT_EQ(graph.verify_max_rows, 3);
  EXPECT_EQ(graph.verify_slot_rows, 3);
  EXPECT_EQ(graph.verify_max_kv_len, 64);
  const cuda::StepSections per_row = cuda::verify_graph_sections(4, 3, 2, 64);
  EXPECT_EQ(per_row.decode_row_count, 12);
  EXPECT_EQ(per_row.verify_seq_count, 0);
}

TEST(CudaStepInputs, GraphDecodeStepPadsRowsOntoTheScratchBlock) {
  ForwardBatch batch;
  SequenceChunk a;
  a.tokens = {7};
  a.num_cached = 17;  // slot 17: block_table[1], offset 1
  a.block_table = {3, 8};
  SequenceChunk b;
  b.tokens = {9};
  b.num_cached = 0;
  b.block_table = {5};
  batch.sequences = {a, b};
  ASSERT_TRUE(cuda::is_graph_decode_step(batch, 4, 4));
  const int padded = 4, max_blocks = 4, scratch = 50;
  const cuda::StepSections s = cuda::decode_graph_sections(padded, max_blocks, max_blocks * 16);
  EXPECT_EQ(s.rows, 4);
  EXPECT_EQ(s.max_kv_len, 64);
  std::vector<std::byte> buffer(s.total_bytes, std::byte{0});
  cuda::pack_decode_step(batch, 16, s, padded, max_blocks, scratch, buffer.data());
  EXPECT_EQ(section(buffer, s.token_ids, 4), (std::vector<int32_t>{7, 9, 0, 0}));
  EXPECT_EQ(section(buffer, s.positions, 4), (std::vector<int32_t>{17, 0, 0, 0}));
  EXPECT_EQ(section(buffer, s.slot_mapping, 4), (std::vector<int32_t>{8 * 16 + 1, 5 * 16, 800, 800}));
  EXPECT_EQ(section(buffer, s.seq_num_cached, 4), (std::vector<int32_t>{17, 0, 0, 0}));
  EXPECT_EQ(section(buffer, s.seq_block_offset, 4), (std::vector<int32_t>{0, 4, 8, 12}));
  EXPECT_EQ(section(buffer, s.seq_mask_offset, 4), (std::vector<int32_t>{-1, -1, -1, -1}));
  const std::vector<int32_t> tables = section(buffer, s.block_tables, 16);
  EXPECT_EQ(tables[0], 3);
  EXPECT_EQ(tables[1], 8);
  EXPECT_EQ(tables[4], 5);
  EXPECT_EQ(tables[8], scratch);
  EXPECT_EQ(tables[12], scratch);
  EXPECT_EQ(section(buffer, s.logits_rows, 2), (std::vector<int32_t>{0, 1}));
}

TEST(CudaStepInputs, OnlyPlainDecodeStepsQualifyForGraphs) {
  SequenceChunk decode;
  decode.tokens = {1};
  decode.block_table = {0};
  ForwardBatch batch;
  batch.sequences = {decode};
  EXPECT_TRUE(cuda::is_graph_decode_step(batch, 8, 2));
  batch.want_hidden = true;
  EXPECT_FALSE(cuda::is_graph_decode_step(batch, 8, 2));
  batch.want_hidden = false;
  batch.sequences[0].tokens = {1, 2};  // a prefill chunk
  EXPECT_FALSE(cuda::is_graph_decode_step(batch, 8, 2));
  batch.sequences[0].tokens = {1};
  batch.sequences[0].block_table = {0, 1, 2};  // longer than the graph's tables
  EXPECT_FALSE(cuda::is_graph_decode_step(batch, 8, 2));
  batch.sequences[0].block_table = {0};
  batch.sequences.assign(9, batch.sequences[0]);  // more rows than any graph
  EXPECT_FALSE(cuda::is_graph_decode_step(batch, 8, 2));
}

// A verify step: a chain of 3 drafts (n 4, mask), a 2-node tree (n 3, siblings), a decode token (n 1, causal).
ForwardBatch verify_batch() {
  SequenceChunk chain;
  chain.tokens = {10, 11, 12, 13};
  chain.num_cached = 30;  // slots 30, 31 in block 4; 32, 33 in block 6
  chain.positions = {30, 31, 32, 33};
  chain.block_table = {1, 4, 6};
  chain.attention_mask = {1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1};
  chain.logits_indices = {0, 1, 2, 3};
  SequenceChunk tree;
  tree.tokens = {20, 21, 22};
  tree.num_cached = 5;
  tree.positions = {5, 6, 6};
  tree.block_table = {9};
  tree.attention_mask = {1, 0, 0, 1, 1, 0, 1, 0, 1};
  tree.logits_indices = {0, 1, 2};
  SequenceChunk decode;
  decode.tokens = {30};
  decode.num_cached = 16;
  decode.block_table = {2, 7};
  ForwardBatch batch;
  batch.sequences = {chain, tree, decode};
  return batch;
}

TEST(CudaStepInputs, GraphBatchesArePowersOfTwoAndContextsBucketsFromTheMinimum) {
  EXPECT_EQ(cuda::graph_batch_size(1, 64), 1);
  EXPECT_EQ(cuda::graph_batch_size(3, 64), 4);
  EXPECT_EQ(cuda::graph_batch_size(33, 64), 64);
  EXPECT_EQ(cuda::graph_batch_size(40, 48), 48);
  EXPECT_EQ(cuda::graph_context_bucket(1, 512, 4096), 512);
  EXPECT_EQ(cuda::graph_context_bucket(513, 512, 4096), 1024);
  EXPECT_EQ(cuda::graph_context_bucket(3000, 512, 2048), 2048);
}

TEST(CudaStepInputs, VerifyStepsQualifyForGraphsWhenEveryChunkIsShort) {
  ForwardBatch batch = verify_batch();
  EXPECT_EQ(cuda::graph_verify_rows(batch, 64, 4, 8, 1024), 4);  // the widest chunk
  batch.want_hidden = true;                                      // ReDrafter: the hidden state is read after
  EXPECT_EQ(cuda::graph_verify_rows(batch, 64, 4, 8, 1024), 4);
  EXPECT_EQ(cuda::graph_verify_rows(batch, 64, 4, 3, 1024), 0);  // a chunk past the rows per sequence
  EXPECT_EQ(cuda::graph_verify_rows(batch, 2, 4, 8, 1024), 0);   // more sequences than any graph
  EXPECT_EQ(cuda::graph_verify_rows(batch, 64, 2, 8, 1024), 0);  // a block table past the graph's tables
  EXPECT_EQ(cuda::graph_verify_rows(batch, 64, 4, 8, 16), 4);    // 4 padded sequences x 4 rows fit exactly
  EXPECT_EQ(cuda::graph_verify_rows(batch, 64, 4, 8, 15), 0);    // 4 padded sequences x 4 rows > 15
  batch.sequences[2].tokens.clear();
  EXPECT_EQ(cuda::graph_verify_rows(batch, 64, 4, 8, 1024), 0);
  batch.sequences.clear();
  EXPECT_EQ(cuda::graph_verify_rows(batch, 64, 4, 8, 1024), 0);
}

TEST(CudaStepInputs, GraphVerifyStepForTheVerifyCtaListsEverySlot) {
  const ForwardBatch batch = verify_batch();
  const cuda::StepSections s = cuda::verify_graph_sections(4, 4, 3, 512, true);
  std::vector<std::byte> buffer(s.total_bytes, std::byte{0xAB});
  cuda::pack_verify_step(batch, 16, s, 4, 4, 3, 40, buffer.data());
  EXPECT_EQ(section(buffer, s.verify_seqs, 4), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(section(buffer, s.seq_num_new, 4), (std::vector<int32_t>{4, 3, 1, 1}));  // slot 3: a padding sequence
}

TEST(CudaStepInputs, GraphVerifyStepKeepsEachSequencesRowsAndPadsOntoTheScratchBlock) {
  const ForwardBatch batch = verify_batch();
  const int padded = 4, per_seq = 4, max_blocks = 4, scratch = 50, bs = 16;
  const cuda::StepSections s = cuda::verify_graph_sections(padded, per_seq, max_blocks, 512);
  EXPECT_EQ(s.rows, 16);
  EXPECT_EQ(s.seqs, 4 + 16);
  EXPECT_EQ(s.max_kv_len, 512);
  EXPECT_EQ(s.decode_row_count, s.rows);  // no row list, no prefill tiles: the launches never change
  EXPECT_EQ(s.decode_max_kv_len, 512);
  EXPECT_EQ(s.prefill_tile_count, 0);
  expect_aligned_in_order(s);
  EXPECT_GE(s.logits_rows, s.block_tables + (4 * 4 + 1) * sizeof(int32_t));
  EXPECT_GE(s.total_bytes, s.masks + 4 * 4 * 4);

  std::vector<std::byte> buffer(s.total_bytes, std::byte{0xAB});
  cuda::pack_verify_step(batch, bs, s, padded, per_seq, max_blocks, scratch, buffer.data());
  // Rows: sequence q at 4q.. (chain 0-3, tree 4-6, decode 8); the rest is padding.
  EXPECT_EQ(section(buffer, s.token_ids, 16),
            (std::vector<int32_t>{10, 11, 12, 13, 20, 21, 22, 0, 30, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(section(buffer, s.positions, 16),
            (std::vector<int32_t>{30, 31, 32, 33, 5, 6, 6, 0, 16, 0, 0, 0, 0, 0, 0, 0}));
  const int32_t pad = scratch * bs;
  EXPECT_EQ(section(buffer, s.slot_mapping, 16),
            (std::vector<int32_t>{4 * bs + 14, 4 * bs + 15, 6 * bs, 6 * bs + 1, 9 * bs + 5, 9 * bs + 6, 9 * bs + 7, pad,
                                  7 * bs, pad, pad, pad, pad, pad, pad, pad}));
  // Padding row r is sequence entry 4 + r: its own one-token sequence over an empty prefix on the scratch table.
  EXPECT_EQ(section(buffer, s.row_seq, 16),
            (std::vector<int32_t>{0, 0, 0, 0, 1, 1, 1, 11, 2, 13, 14, 15, 16, 17, 18, 19}));
  EXPECT_EQ(section(buffer, s.seq_q_start, 3), (std::vector<int32_t>{0, 4, 8}));
  EXPECT_EQ(section(buffer, s.seq_num_new, 3), (std::vector<int32_t>{4, 3, 1}));
  EXPECT_EQ(section(buffer, s.seq_num_cached, 3), (std::vector<int32_t>{30, 5, 16}));
  EXPECT_EQ(section(buffer, s.seq_block_offset, 3), (std::vector<int32_t>{0, 4, 8}));
  EXPECT_EQ(section(buffer, s.seq_mask_offset, 3), (std::vector<int32_t>{0, 16, -1}));
  for (int32_t r : {7, 9, 10, 15}) {
    const size_t entry = size_t(padded + r);
    EXPECT_EQ(section(buffer, s.seq_q_start, entry + 1)[entry], r);
    EXPECT_EQ(section(buffer, s.seq_num_new, entry + 1)[entry], 1);
    EXPECT_EQ(section(buffer, s.seq_num_cached, entry + 1)[entry], 0);
    EXPECT_EQ(section(buffer, s.seq_block_offset, entry + 1)[entry], padded * max_blocks);
    EXPECT_EQ(section(buffer, s.seq_mask_offset, entry + 1)[entry], -1);
  }
  const std::vector<int32_t> tables = section(buffer, s.block_tables, 4 * 4 + 1);
  EXPECT_EQ(std::vector<int32_t>(tables.begin(), tables.begin() + 3), (std::vector<int32_t>{1, 4, 6}));
  EXPECT_EQ(tables[4], 9);
  EXPECT_EQ(tables[8], 2);
  EXPECT_EQ(tables[9], 7);
  EXPECT_EQ(tables[16], scratch);  // the padding sequences' table
  // Each mask at its slot's fixed offset, n² bytes as the attention kernel indexes it (row qi at qi × n).
  std::vector<uint8_t> masks(16 + 9);
  std::memcpy(masks.data(), buffer.data() + s.masks, 16 + 9);
  EXPECT_EQ(std::vector<uint8_t>(masks.begin(), masks.begin() + 16), batch.sequences[0].attention_mask);
  EXPECT_EQ(std::vector<uint8_t>(masks.begin() + 16, masks.end()), batch.sequences[1].attention_mask);
  // Logits rows in result order: every chain and tree row, then the decode token's.
  EXPECT_EQ(section(buffer, s.logits_rows, 8), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 8}));
}

TEST(CudaBackendWithoutDevice, LoadFailsWithOneClearLine) {
  if (!cuda::list_devices().empty()) GTEST_SKIP() << "a CUDA device is present";
  try {
    CudaBackend::load(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_gqa_bias", CudaBackendOptions{});
    FAIL() << "loading the CUDA backend without a device must fail";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("no CUDA device"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(CudaBackendWithoutDevice, BadMemoryFractionIsRejectedBeforeTouchingTheDevice) {
  CudaBackendOptions options;
  options.gpu_memory_fraction = 1.5f;
  try {
    CudaBackend::load(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_gqa_bias", options);
    FAIL() << "a fraction above 1 must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--gpu-memory-fraction"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qed::testing
