#include "backend/tp/shard_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <regex>

#include "core/error.h"

namespace qed::tp {
namespace {

// How one tensor of a decoder layer is split.
enum class Split { Replicate, Rows, Columns, RankZeroOnly };

struct Range {
  int64_t begin = 0, count = 0;  // in rows (or columns) of the tensor
};

struct Rule {
  Split split = Split::Replicate;
  Range range;
};

// The rule for model.layers.<L>.<suffix>; anything not named (norms, KV-cache scales in any spelling, input
// scales) is replicated.
Rule layer_rule(const std::string& suffix, const RankSlice& s, int head_dim) {
  const int64_t hd = head_dim;
  const Range q{s.q_head_begin * hd, s.q_heads * hd};
  const Range kv{s.kv_head_begin * hd, s.kv_heads * hd};
  const Range inter{s.inter_begin, s.inter};
  auto is = [&](const char* module, const char* field) { return suffix == fmt::format("{}.{}", module, field); };
  for (const char* field : {"weight", "bias", "weight_scale"}) {
    // Column-parallel: the output rows (and their bias / per-channel scales) of the rank's heads or intermediate.
    if (is("self_attn.q_proj", field)) return {Split::Rows, q};
    if (is("self_attn.k_proj", field) || is("self_attn.v_proj", field)) return {Split::Rows, kv};
    if (is("mlp.gate_proj", field) || is("mlp.up_proj", field)) return {Split::Rows, inter};
  }
  // Row-parallel: the input columns; the output (and so per-channel scales) is whole, the bias added once.
  if (is("self_attn.o_proj", "weight")) return {Split::Columns, q};
  if (is("mlp.down_proj", "weight")) return {Split::Columns, inter};
  if (is("self_attn.o_proj", "bias") || is("mlp.down_proj", "bias")) return {Split::RankZeroOnly, {}};
  return {};
}

class ShardBuilder {
 public:
  ShardBuilder(RankShard& shard, const std::string& label) : shard_(shard), label_(label) {}

  void add_view(const TensorInfo& t) { tensors_.push_back(t); }

  // Rows [begin, begin + count) of t (its first dimension; contiguous, so a view). A per-tensor scale (one element)
  // is replicated.
  void add_rows(const TensorInfo& t, Range range) {
    if (t.numel() == 1 || t.shape.empty()) return add_view(t);
    const int64_t rows = t.shape[0];
    if (range.begin + range.count > rows) {
      fail("{}: tensor '{}' has {} rows, the shard needs rows [{}, {})", label_, t.name, rows, range.begin,
           range.begin + range.count);
    }
    const size_t row_bytes = t.nbytes / size_t(rows);
    TensorInfo view = t;
    view.shape[0] = range.count;
    view.data = t.data + size_t(range.begin) * row_bytes;
    view.nbytes = size_t(range.count) * row_bytes;
    view.offset = 0;
    tensors_.push_back(view);
  }

  // Columns [begin, begin + count) of the 2-D t (strided, so copied).
  void add_columns(const TensorInfo& t, Range range) {
    if (t.shape.size() != 2 || range.begin + range.count > t.shape[1]) {
      fail("{}: tensor '{}' is not a matrix with the {} columns the shard needs", label_, t.name,
           range.begin + range.count);
    }
    const size_t elem = dtype_size(t.dtype);
    const size_t rows = size_t(t.shape[0]), cols = size_t(t.shape[1]);
    std::vector<unsigned char>& bytes = own(rows * size_t(range.count) * elem);
    for (size_t r = 0; r < rows; ++r) {
      std::memcpy(bytes.data() + r * size_t(range.count) * elem, t.data + (r * cols + size_t(range.begin)) * elem,
                  size_t(range.count) * elem);
    }
    TensorInfo copy = t;
    copy.shape[1] = range.count;
    finish_copy(copy, bytes);
  }

  // A tensor of t's shape and dtype holding zeros (all-zero bytes are +0 in every float format).
  void add_zeros(const TensorInfo& t) {
    TensorInfo copy = t;
    finish_copy(copy, own(t.nbytes));
  }

  // Rows [begin, begin + count) of t, zero-padded to `padded` rows, under `name`.
  void add_padded_rows(const TensorInfo& t, const std::string& name, int64_t begin, int64_t count, int64_t padded) {
    const size_t row_bytes = t.nbytes / size_t(t.shape.at(0));
    TensorInfo copy = t;
    copy.name = name;
    copy.shape[0] = padded;
    if (count == padded) {
      copy.data = t.data + size_t(begin) * row_bytes;
      copy.nbytes = size_t(padded) * row_bytes;
      copy.offset = 0;
      tensors_.push_back(copy);
      return;
    }
    std::vector<unsigned char>& bytes = own(size_t(padded) * row_bytes);
    if (count > 0) std::memcpy(bytes.data(), t.data + size_t(begin) * row_bytes, size_t(count) * row_bytes);
    finish_copy(copy, bytes);
  }

  Checkpoint build() { return Checkpoint::from_memory(label_, std::move(tensors_)); }

 private:
  std::vector<unsigned char>& own(size_t bytes) {
    shard_.storage.emplace_back(bytes, static_cast<unsigned char>(0));
    return shard_.storage.back();
  }
  void finish_copy(TensorInfo& t, const std::vector<unsigned char>& bytes) {
    t.data = bytes.data();
    t.nbytes = bytes.size();
    t.offset = 0;
    tensors_.push_back(t);
  }

  RankShard& shard_;
  std::string label_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace

ShardPlan ShardPlan::make(const ModelConfig& config, int ranks) {
  const int heads = config.num_heads, kv = config.num_kv_heads, inter = config.intermediate_size;
  if (ranks < 1) fail("--tensor-parallel-size must be at least 1, got {}", ranks);
  if (heads % ranks != 0) {
    fail("tensor parallelism: {} attention heads do not split over {} ranks (--tensor-parallel-size must divide {})",
         heads, ranks, heads);
  }
  if (kv % ranks != 0 && ranks % kv != 0) {
    fail("tensor parallelism: {} KV heads neither split over {} ranks nor replicate evenly onto them", kv, ranks);
  }
  if (inter % ranks != 0) {
    fail("tensor parallelism: intermediate_size {} does not split over {} ranks", inter, ranks);
  }
  ShardPlan plan;
  plan.ranks = ranks;
  plan.kv_replicated = kv % ranks != 0;
  const int per_rank = (config.vocab_size + ranks - 1) / ranks;
  plan.vocab_shard = (per_rank + kVocabShardAlign - 1) / kVocabShardAlign * kVocabShardAlign;
  for (int r = 0; r < ranks; ++r) {
    RankSlice s;
    s.q_heads = heads / ranks;
    s.q_head_begin = r * s.q_heads;
    if (plan.kv_replicated) {
      // ranks / kv consecutive ranks share one KV head: the one their q heads read (q head h reads h / (heads/kv)).
      s.kv_heads = 1;
      s.kv_head_begin = s.q_head_begin / (heads / kv);
    } else {
      s.kv_heads = kv / ranks;
      s.kv_head_begin = r * s.kv_heads;
    }
    s.inter = inter / ranks;
    s.inter_begin = r * s.inter;
    s.vocab_begin = std::min(r * plan.vocab_shard, config.vocab_size);
    s.vocab = std::min(plan.vocab_shard, config.vocab_size - s.vocab_begin);
    plan.slices.push_back(s);
  }
  return plan;
}

RankShard make_rank_shard(const Checkpoint& source, const ModelConfig& config, const ShardPlan& plan, int rank) {
  if (rank < 0 || rank >= plan.ranks) fail("tensor parallelism: rank {} of {}", rank, plan.ranks);
  RankShard shard;
  shard.rank = rank;
  shard.slice = plan.slices[size_t(rank)];
  const RankSlice& s = shard.slice;
  shard.config = config;
  shard.config.num_heads = s.q_heads;
  shard.config.num_kv_heads = s.kv_heads;
  shard.config.intermediate_size = s.inter;
  shard.config.tie_word_embeddings = true;  // the lm_head slice travels apart (kLmHeadShardName)
  const std::string label = fmt::format("{} (tensor-parallel rank {} of {})", source.dir(), rank, plan.ranks);
  shard.config.validate(label);

  static const std::regex layer_name(R"(model\.layers\.(\d+)\.(.+))");
  ShardBuilder builder(shard, label);
  for (const std::string& name : source.names()) {
    const TensorInfo& t = source.get(name);
    if (name == "lm_head.weight") continue;
    std::smatch m;
    if (!std::regex_match(name, m, layer_name)) {
      builder.add_view(t);
      continue;
    }
    const Rule rule = layer_rule(m[2].str(), s, config.head_dim);
    switch (rule.split) {
      case Split::Replicate:
        builder.add_view(t);
        break;
      case Split::Rows:
        builder.add_rows(t, rule.range);
        break;
      case Split::Columns:
        builder.add_columns(t, rule.range);
        break;
      case Split::RankZeroOnly:
        if (rank == 0) {
          builder.add_view(t);
        } else {
          builder.add_zeros(t);
        }
        break;
    }
  }
  const TensorInfo& head = source.get(config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  if (head.shape.size() != 2 || head.shape[0] != config.vocab_size) {
    fail("{}: tensor '{}' is not [{}, hidden]", source.dir(), head.name, config.vocab_size);
  }
  builder.add_padded_rows(head, kLmHeadShardName, s.vocab_begin, s.vocab, plan.vocab_shard);
  shard.checkpoint = builder.build();
  return shard;
}

}  // namespace qed::tp
