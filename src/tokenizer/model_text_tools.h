#pragma once
// A model directory's tokenizer and chat template, each loaded on first use: jsonl rows that bring input_ids need
// neither. Shared by the calibration data (src/quant) and the drafter training data (src/train).
#include <optional>
#include <string>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace qed {

class ModelTextTools {
 public:
  // What a chat template this code does not know means: calibration only needs realistic activations and may use
  // the bare text (Ignore); training data must be rendered as the model will see it at inference (Fail).
  enum class UnknownChatTemplate { Fail, Ignore };

  ModelTextTools(std::string model_dir, UnknownChatTemplate on_unknown)
      : model_dir_(std::move(model_dir)), on_unknown_(on_unknown) {}

  // Throws qed::Error naming `where` (the row) and the directory when it has no tokenizer.json.
  const Tokenizer& tokenizer(const std::string& where);
  // Null when the model has no chat template (or, with Ignore, one that ChatTemplate does not recognize).
  const ChatTemplate* chat_template();

 private:
  std::string model_dir_;
  UnknownChatTemplate on_unknown_;
  std::optional<Tokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_;
  bool chat_checked_ = false;
};

}  // namespace qed
