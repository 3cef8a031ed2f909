#include "tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "tokenizer/chat_render.h"
#include "tokenizer/chat_template_scan.h"

namespace qed {
namespace {

// Fragments of each family's template in chat_scan's canonical form (tags only, no whitespace, ' quotes).
// Each one pins down a behaviour the renderer in chat_render.cpp reproduces; a template missing one of them is a
// variant we would render wrongly, so it is refused.
constexpr std::string_view kQwen3Fragments[] = {
    R"({%ifmessages[0].role=='system'%}{{'<|im_start|>system\n'+messages[0].content+'<|im_end|>\n'}}{%endif%}{%endif%})",
    R"({%setns=namespace(multi_step_tool=true,last_query_index=messages|length-1)%})",
    R"({%ifns.multi_step_toolandmessage.role=='user'andnot(message.content.startswith('<tool_response>')andmessage.content.endswith('</tool_response>'))%}{%setns.multi_step_tool=false%}{%setns.last_query_index=index%})",
    R"({%if(message.role=='user')or(message.role=='system'andnotloop.first)%}{{'<|im_start|>'+message.role+'\n'+message.content+'<|im_end|>'+'\n'}})",
    R"({%ifmessage.reasoning_contentisdefinedandmessage.reasoning_contentisnotnone%}{%setreasoning_content=message.reasoning_content%}{%else%}{%if'</think>'inmessage.content%}{%setcontent=message.content.split('</think>')[-1].lstrip('\n')%}{%setreasoning_content=message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')%}{%endif%}{%endif%})",
    R"({%ifloop.index0>ns.last_query_index%}{%ifloop.lastor(notloop.lastandreasoning_content)%}{{'<|im_start|>'+message.role+'\n<think>\n'+reasoning_content.strip('\n')+'\n</think>\n\n'+content.lstrip('\n')}}{%else%}{{'<|im_start|>'+message.role+'\n'+content}}{%endif%}{%else%}{{'<|im_start|>'+message.role+'\n'+content}}{%endif%})",
    R"({%elifmessage.role=='tool'%}{%ifloop.firstor(messages[loop.index0-1].role!='tool')%}{{'<|im_start|>user'}}{%endif%}{{'\n<tool_response>\n'}}{{message.content}}{{'\n</tool_response>'}}{%ifloop.lastor(messages[loop.index0+1].role!='tool')%}{{'<|im_end|>\n'}}{%endif%}{%endif%}{%endfor%})",
    R"({%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}{%ifenable_thinkingisdefinedandenable_thinkingisfalse%}{{'<think>\n\n</think>\n\n'}}{%endif%}{%endif%})",
};

constexpr std::string_view kQwen25Fragments[] = {
    R"({%ifmessages[0].role=='system'%}{{'<|im_start|>system\n'+messages[0].content+'<|im_end|>\n'}})",
    R"({%formessageinmessages%}{%if(message.role=='user')or(message.role=='system'andnotloop.first)or(message.role=='assistant'andnotmessage.tool_calls)%}{{'<|im_start|>'+message.role+'\n'+message.content+'<|im_end|>'+'\n'}})",
    R"({%elifmessage.role=='tool'%}{%if(loop.index0==0)or(messages[loop.index0-1].role!='tool')%}{{'<|im_start|>user'}}{%endif%}{{'\n<tool_response>\n'}}{{message.content}}{{'\n</tool_response>'}}{%ifloop.lastor(messages[loop.index0+1].role!='tool')%}{{'<|im_end|>\n'}}{%endif%}{%endif%}{%endfor%})",
};
constexpr std::string_view kQwen25DefaultSystemHead = R"({%else%}{{'<|im_start|>system\n)";
constexpr std::string_view kQwen25LoopStart = R"({%formessageinmessages%})";
constexpr std::string_view kQwen25Ending = R"({%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}{%endif%})";

constexpr std::string_view kLlama3Loop =
    R"({%setloop_messages=messages%}{%formessageinloop_messages%}{%setcontent='<|start_header_id|>'+message.role+'<|end_header_id|>\n\n'+message.content|trim+'<|eot_id|>'%}{%ifloop.index0==0%}{%setcontent=bos_token+content%}{%endif%}{{content}}{%endfor%})";
constexpr std::string_view kLlama3Header = R"({{'<|start_header_id|>assistant<|end_header_id|>\n\n'}})";

constexpr std::string_view kChatMLLoopHead = R"({%formessageinmessages%})";
constexpr std::string_view kChatMLDefaultSystemHead =
    R"({%ifloop.firstandmessages[0].role!='system'%}{{'<|im_start|>system\n)";
constexpr std::string_view kChatMLDefaultSystemTail = R"(<|im_end|>\n'}}{%endif%})";
constexpr std::string_view kChatMLLoopRest =
    R"({{'<|im_start|>'+message.role+'\n'+message.content+'<|im_end|>'+'\n'}}{%endfor%}{%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}{%endif%})";

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// The default system message a ChatML template inserts: the body of the first string literal
// '<|im_start|>system\n…<|im_end|>\n' with a non-empty body, read from the raw template so spaces survive.
std::optional<std::string> find_default_system(std::string_view jinja) {
  constexpr std::string_view kHead = "<|im_start|>system\n";
  constexpr std::string_view kTail = "<|im_end|>\n";
  for (size_t at = 0; at < jinja.size(); ++at) {
    if (jinja[at] != '\'' && jinja[at] != '"') continue;
    std::string value;
    if (!chat_scan::read_string_literal(jinja, at, value)) return std::nullopt;
    if (value.size() > kHead.size() + kTail.size() && value.starts_with(kHead) && value.ends_with(kTail)) {
      return value.substr(kHead.size(), value.size() - kHead.size() - kTail.size());
    }
    // Skip past this literal: its closing quote is the first unescaped one after `at`.
    size_t k = at + 1;
    while (k < jinja.size() && jinja[k] != jinja[at]) k += jinja[k] == '\\' ? 2 : 1;
    at = k;
  }
  return std::nullopt;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: read error", path.string());
  return text.str();
}

// bos_token is either a string or, in older configs, an AddedToken object {"content": …}.
std::optional<std::string> token_text(const nlohmann::json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

const char* to_string(ChatTemplateFamily family) {
  switch (family) {
    case ChatTemplateFamily::Qwen25ChatML:
      return "qwen2.5-chatml";
    case ChatTemplateFamily::Qwen3:
      return "qwen3";
    case ChatTemplateFamily::Llama3:
      return "llama3";
    case ChatTemplateFamily::PlainChatML:
      return "chatml";
  }
  return "unknown";
}

ChatTemplate ChatTemplate::from_template_text(const std::string& jinja_text,
                                              const std::optional<std::string>& bos_token, const std::string& source) {
  const chat_scan::TemplateShape shape = chat_scan::scan(jinja_text);
  const auto unsupported = [&](std::string_view why) -> ChatTemplate {
    fail("unsupported chat template in {} ({}); supported: Qwen2.5 ChatML, Qwen3, Llama-3, plain ChatML", source, why);
  };
  if (shape.unterminated_tag) unsupported("unterminated Jinja tag");
  if (!shape.literal_text.empty()) unsupported("template writes text outside {{ }} tags");
  const std::string_view code = shape.code;
  const auto require_all = [&](const auto& fragments, std::string_view family) {
    for (const std::string_view fragment : fragments) {
      if (!contains(code, fragment)) {
        unsupported(fmt::format("a {} variant: no `{}`", family, fragment.substr(0, 60)));
      }
    }
  };

  ChatTemplate result;
  result.bos_token_ = bos_token.value_or("");
  if (contains(code, "<|im_start|>") && (contains(code, "<think>") || contains(code, "enable_thinking"))) {
    // A `tools` argument is not part of our API; the no-tools branch is what renders.
    require_all(kQwen3Fragments, "Qwen3");
    result.family_ = ChatTemplateFamily::Qwen3;
  } else if (contains(code, "<|im_start|>") && contains(code, "<tool_response>")) {
    require_all(kQwen25Fragments, "Qwen2.5");
    if (!code.ends_with(kQwen25Ending)) unsupported("a Qwen2.5 variant: unexpected generation prompt");
    // After the system-message branch comes either nothing or the default system turn, then the message loop.
    const std::string_view after_system = code.substr(code.find(kQwen25Fragments[0]) + kQwen25Fragments[0].size());
    const size_t loop_at = after_system.find(kQwen25LoopStart);
    const std::string_view default_branch = after_system.substr(0, loop_at);
    result.family_ = ChatTemplateFamily::Qwen25ChatML;
    if (default_branch.starts_with(kQwen25DefaultSystemHead) &&
        default_branch.ends_with(R"(<|im_end|>\n'}}{%endif%}{%endif%})")) {
      result.default_system_ = find_default_system(jinja_text);
      if (!result.default_system_) unsupported("a Qwen2.5 variant: unreadable default system message");
    } else if (default_branch != "{%endif%}{%endif%}") {
      unsupported("a Qwen2.5 variant: unexpected statements after the system message");
    }
  } else if (contains(code, "<|start_header_id|>")) {
    if (contains(code, "CuttingKnowledgeDate") || contains(code, "tools") || contains(code, "ipython")) {
      unsupported("Llama-3.1+ template with date preamble / tools");
    }
    if (!code.starts_with(kLlama3Loop)) unsupported("a Llama-3 variant: unexpected message loop");
    const std::string_view rest = code.substr(kLlama3Loop.size());
    if (rest == kLlama3Header) {
      result.generation_prompt_always_ = true;
    } else if (rest != fmt::format("{{%ifadd_generation_prompt%}}{}{{%endif%}}", kLlama3Header)) {
      unsupported("a Llama-3 variant: unexpected generation prompt");
    }
    if (!bos_token) fail("{}: the Llama-3 chat template uses bos_token but none is set", source);
    result.family_ = ChatTemplateFamily::Llama3;
  } else if (code.starts_with(kChatMLLoopHead) && code.ends_with(kChatMLLoopRest)) {
    std::string_view middle =
        code.substr(kChatMLLoopHead.size(), code.size() - kChatMLLoopHead.size() - kChatMLLoopRest.size());
    if (!middle.empty()) {
      if (!middle.starts_with(kChatMLDefaultSystemHead) || !middle.ends_with(kChatMLDefaultSystemTail)) {
        unsupported("a ChatML variant: unexpected statements in the message loop");
      }
      result.default_system_ = find_default_system(jinja_text);
      if (!result.default_system_) unsupported("a ChatML variant: unreadable default system message");
    }
    result.family_ = ChatTemplateFamily::PlainChatML;
  } else {
    unsupported("no known family markers");
  }
  return result;
}

ChatTemplate ChatTemplate::from_config_text(const std::string& tokenizer_config_json, const std::string& source) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(tokenizer_config_json);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON: {}", source, e.what());
  }
  if (!config.is_object()) fail("{}: expected a JSON object", source);
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) fail("{}: no chat_template", source);
  std::string jinja;
  if (it->is_string()) {
    jinja = it->get<std::string>();
  } else if (it->is_array()) {
    // Several named templates ([{"name": "default", "template": …}, {"name": "tool_use", …}]): apply_chat_template
    // uses "default" when no tools are passed.
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        jinja = entry["template"].get<std::string>();
      }
    }
    if (jinja.empty()) fail("{}: chat_template list has no \"default\" template", source);
  } else {
    fail("{}: chat_template must be a string or a list of named templates", source);
  }
  return from_template_text(jinja, token_text(config, "bos_token"), source);
}

ChatTemplate ChatTemplate::from_dir(const std::string& dir) {
  const std::filesystem::path config_path = std::filesystem::path(dir) / "tokenizer_config.json";
  const std::filesystem::path jinja_path = std::filesystem::path(dir) / "chat_template.jinja";
  const std::string config_text = read_file(config_path);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(config_text);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON: {}", config_path.string(), e.what());
  }
  // transformers >= 4.47 writes the template to chat_template.jinja instead of tokenizer_config.json.
  if (config.is_object() && !config.contains("chat_template") && std::filesystem::exists(jinja_path)) {
    return from_template_text(read_file(jinja_path), token_text(config, "bos_token"), jinja_path.string());
  }
  return from_config_text(config_text, config_path.string());
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, const Options& options) const {
  if (messages.empty()) fail("chat template: cannot render an empty conversation (at least one message needed)");
  switch (family_) {
    case ChatTemplateFamily::Qwen25ChatML:
      return chat_render::qwen25(messages, options, default_system_);
    case ChatTemplateFamily::Qwen3:
      return chat_render::qwen3(messages, options);
    case ChatTemplateFamily::Llama3:
      return chat_render::llama3(messages, options, bos_token_, generation_prompt_always_);
    case ChatTemplateFamily::PlainChatML:
      return chat_render::plain_chatml(messages, options, default_system_);
  }
  fail("chat template: unknown family");
}

}  // namespace qed
