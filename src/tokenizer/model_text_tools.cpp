#include "tokenizer/model_text_tools.h"

#include <filesystem>

#include "core/error.h"

namespace qed {

namespace fs = std::filesystem;

const Tokenizer& ModelTextTools::tokenizer(const std::string& where) {
  if (!tokenizer_) {
    if (!fs::exists(model_dir_ + "/tokenizer.json")) {
      fail("{}: a text row needs the model's tokenizer, but {} has no tokenizer.json (give input_ids rows)", where,
           model_dir_);
    }
    tokenizer_.emplace(Tokenizer::from_dir(model_dir_));
  }
  return *tokenizer_;
}

const ChatTemplate* ModelTextTools::chat_template() {
  if (!chat_checked_) {
    chat_checked_ = true;
    if (fs::exists(model_dir_ + "/tokenizer_config.json") || fs::exists(model_dir_ + "/chat_template.jinja")) {
      if (on_unknown_ == UnknownChatTemplate::Fail) {
        chat_.emplace(ChatTemplate::from_dir(model_dir_));
      } else {
        try {
          chat_.emplace(ChatTemplate::from_dir(model_dir_));
        } catch (const Error&) {
          chat_.reset();  // no (known) template: the problem text is used as it is
        }
      }
    }
  }
  return chat_ ? &*chat_ : nullptr;
}

}  // namespace qed
