// Hand-checked renderings of each family (the full parity sweep against transformers is
// tests/python/test_chat_template_parity.py) and the errors a user can hit.
#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"

namespace qed {
namespace {

const std::string kShared = QED_SHARED_DIR;
const std::string kFixtures = std::string(QED_SOURCE_DIR) + "/tests/fixtures/chat_templates";

std::string qwen3_dir() {
  return kShared + "/data/tokenizers/qwen3";
}
std::string llama3_dir() {
  return kShared + "/data/tokenizers/llama3";
}

// The message of the qed::Error `f` throws ("" if it does not throw).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string config_with(const std::string& chat_template) {
  return nlohmann::json{{"chat_template", chat_template}, {"bos_token", "<s>"}}.dump();
}

ChatTemplate::Options generation(bool add, std::optional<bool> thinking = std::nullopt) {
  ChatTemplate::Options options;
  options.add_generation_prompt = add;
  options.enable_thinking = thinking;
  return options;
}

class TemporaryDir {
 public:
  TemporaryDir() : path_(std::filesystem::temp_directory_path() / ("qed_chat_" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path_);
  }
  ~TemporaryDir() { std::filesystem::remove_all(path_); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path_ / name) << text; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

TEST(ChatTemplateQwen25, InsertsTheDefaultSystemMessageWhenNoneIsGiven) {
  const ChatTemplate t = ChatTemplate::from_dir(kFixtures + "/qwen2.5");
  EXPECT_EQ(t.family(), ChatTemplateFamily::Qwen25ChatML);
  EXPECT_EQ(t.render({{"user", "1+1?"}}),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateQwen25, GivenSystemMessageReplacesTheDefault) {
  const ChatTemplate t = ChatTemplate::from_dir(kFixtures + "/qwen2.5");
  EXPECT_EQ(t.render({{"system", "S"}, {"user", "U"}, {"assistant", "A"}}, generation(false)),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n");
}

TEST(ChatTemplateQwen25, ConsecutiveToolResultsShareOneUserTurn) {
  const ChatTemplate t = ChatTemplate::from_dir(kFixtures + "/qwen2.5");
  EXPECT_EQ(t.render({{"system", "S"}, {"tool", "a"}, {"tool", "b"}}, generation(false)),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<tool_response>\na\n</tool_response>\n"
            "<tool_response>\nb\n</tool_response><|im_end|>\n");
}

TEST(ChatTemplateQwen25, ListsToolsUnderTheDefaultSystemTextAndWritesToolCallsAsJson) {
  const ChatTemplate t = ChatTemplate::from_dir(kFixtures + "/qwen2.5");
  ChatTemplate::Options options = generation(false);
  options.tools_json = {R"({"name": "python", "parameters": {"x": 1.0}})"};
  ChatMessage call{"assistant", ""};
  call.tool_calls = {{"python", R"("{\"code\": \"1\"}")"}};  // OpenAI form: arguments as a JSON string
  EXPECT_EQ(
      t.render({{"user", "u"}, call}, options),
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
      "You may call one or more functions to assist with the user query.\n\nYou are provided with function "
      "signatures within <tools></tools> XML tags:\n<tools>\n{\"name\": \"python\", \"parameters\": {\"x\": 1.0}}\n"
      "</tools>\n\nFor each function call, return a json object with function name and arguments within "
      "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
      "<args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nu<|im_end|>\n"
      // Qwen2.5 passes string arguments through tojson, so they stay a quoted JSON string.
      "<|im_start|>assistant\n<tool_call>\n{\"name\": \"python\", \"arguments\": \"{\\\"code\\\": \\\"1\\\"}\"}\n"
      "</tool_call><|im_end|>\n");
}

TEST(ChatTemplateQwen3, WritesStringToolArgumentsVerbatim) {
  const ChatTemplate t = ChatTemplate::from_dir(qwen3_dir());
  ChatMessage call{"assistant", "Running."};
  call.tool_calls = {{"python", R"("{\"code\": \"1\"}")"}, {"python", R"({"code": "2"})"}};
  EXPECT_EQ(t.render({{"user", "u"}, call}, generation(false)),
            "<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nRunning.\n<tool_call>\n"
            "{\"name\": \"python\", \"arguments\": {\"code\": \"1\"}}\n</tool_call>\n<tool_call>\n"
            "{\"name\": \"python\", \"arguments\": {\"code\": \"2\"}}\n</tool_call><|im_end|>\n");
}

TEST(ChatTemplateQwen3, KeepsReasoningOnlyAfterTheLastUserQuery) {
  const ChatTemplate t = ChatTemplate::from_dir(qwen3_dir());
  EXPECT_EQ(t.family(), ChatTemplateFamily::Qwen3);
  const ChatMessage think{"assistant", "<think>\nr\n</think>\n\na"};
  // Earlier turn: reasoning dropped. Final turn after the last query: kept.
  EXPECT_EQ(t.render({{"user", "q1"}, think, {"user", "q2"}, think}, generation(false)),
            "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"
            "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\na<|im_end|>\n");
}

TEST(ChatTemplateQwen3, ThinkingOffAppendsAnEmptyThinkBlockOnlyWhenExplicitlyFalse) {
  const ChatTemplate t = ChatTemplate::from_dir(qwen3_dir());
  const std::vector<ChatMessage> conversation = {{"user", "q"}};
  EXPECT_EQ(t.render(conversation, generation(true, false)),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(t.render(conversation, generation(true, true)), "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.render(conversation, generation(true)), "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateQwen3, ReasoningContentFieldWinsOverThinkTagsInContent) {
  const ChatTemplate t = ChatTemplate::from_dir(qwen3_dir());
  ChatMessage answer{"assistant", "<think>x</think>y"};
  answer.reasoning_content = "R";
  EXPECT_EQ(t.render({{"user", "q"}, answer}, generation(false)),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nR\n</think>\n\n<think>x</think>y"
            "<|im_end|>\n");
}

TEST(ChatTemplateQwen3, HasNoDefaultSystemMessage) {
  const ChatTemplate t = ChatTemplate::from_dir(qwen3_dir());
  EXPECT_FALSE(t.default_system_message().has_value());
}

TEST(ChatTemplateLlama3, PutsBosFirstAndTrimsContent) {
  const ChatTemplate t = ChatTemplate::from_dir(llama3_dir());
  EXPECT_EQ(t.family(), ChatTemplateFamily::Llama3);
  // This (original Llama-3-Instruct) template appends the assistant header even without add_generation_prompt.
  EXPECT_EQ(t.render({{"system", " S\n"}, {"user", "\u3000U "}}, generation(false)),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateLlama3, LaterRevisionHonoursAddGenerationPrompt) {
  const std::string jinja =
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
      "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
      "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
      "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
  const ChatTemplate t = ChatTemplate::from_config_text(config_with(jinja), "cfg.json");
  EXPECT_EQ(t.render({{"user", "u"}}, generation(false)), "<s><|start_header_id|>user<|end_header_id|>\n\nu<|eot_id|>");
}

TEST(ChatTemplatePlainChatML, RendersEveryRoleAlikeWithQwen2DefaultSystem) {
  const ChatTemplate t = ChatTemplate::from_dir(kFixtures + "/chatml");
  EXPECT_EQ(t.family(), ChatTemplateFamily::PlainChatML);
  EXPECT_EQ(t.default_system_message(), "You are a helpful assistant.");
  EXPECT_EQ(t.render({{"function", "f"}}, generation(true)),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>function\nf<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplateLoad, ReadsChatTemplateJinjaWhenTheConfigHasNone) {
  TemporaryDir dir;
  dir.write("tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  dir.write("chat_template.jinja",
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
            "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
            "{% endif %}\n");
  const ChatTemplate t = ChatTemplate::from_dir(dir.str());
  EXPECT_EQ(t.render({{"user", "u"}}, generation(false)), "<|im_start|>user\nu<|im_end|>\n");
}

TEST(ChatTemplateLoad, NamedTemplateListUsesDefault) {
  const std::string jinja =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
      "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  const nlohmann::json config = {
      {"chat_template", {{{"name", "tool_use"}, {"template", "x"}}, {{"name", "default"}, {"template", jinja}}}}};
  EXPECT_EQ(ChatTemplate::from_config_text(config.dump(), "cfg.json").family(), ChatTemplateFamily::PlainChatML);
}

TEST(ChatTemplateErrors, UnknownTemplateNamesTheFile) {
  const std::string message = error_of([] {
    ChatTemplate::from_config_text(config_with("{% for m in messages %}{{ m.content }}{% endfor %}"),
                                   "dir/tokenizer_config.json");
  });
  EXPECT_NE(message.find("unsupported chat template in dir/tokenizer_config.json"), std::string::npos) << message;
}

TEST(ChatTemplateErrors, MissingFileNamesIt) {
  const std::string message = error_of([] { ChatTemplate::from_dir("/nonexistent/qed"); });
  EXPECT_NE(message.find("/nonexistent/qed/tokenizer_config.json"), std::string::npos) << message;
}

TEST(ChatTemplateErrors, ConfigWithoutChatTemplateNamesTheFile) {
  const std::string message = error_of([] { ChatTemplate::from_config_text(R"({"bos_token": null})", "x.json"); });
  EXPECT_EQ(message, "x.json: no chat_template");
}

TEST(ChatTemplateErrors, InvalidJsonNamesTheFile) {
  const std::string message = error_of([] { ChatTemplate::from_config_text("{\"chat_template\": ", "x.json"); });
  EXPECT_EQ(message.rfind("x.json: invalid JSON", 0), 0u) << message;
}

TEST(ChatTemplateErrors, EmptyConversationIsRefused) {
  const ChatTemplate t = ChatTemplate::from_dir(qwen3_dir());
  EXPECT_NE(error_of([&] { t.render({}); }).find("empty conversation"), std::string::npos);
}

TEST(ChatTemplateErrors, Llama31DatePreambleTemplateIsRefusedNotMisrendered) {
  const std::string jinja =
      "{{- bos_token }}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Cutting Knowledge Date: "
      "December 2023\\n' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
      "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}";
  const std::string message = error_of([&] { ChatTemplate::from_config_text(config_with(jinja), "l31.json"); });
  EXPECT_NE(message.find("unsupported chat template in l31.json"), std::string::npos) << message;
}

TEST(ChatTemplateErrors, Llama3WithoutBosTokenIsAnError) {
  std::ifstream in(llama3_dir() + "/tokenizer_config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config.erase("bos_token");
  const std::string message = error_of([&] { ChatTemplate::from_config_text(config.dump(), "l3.json"); });
  EXPECT_NE(message.find("bos_token"), std::string::npos) << message;
}

TEST(ChatTemplateErrors, Qwen3VariantWithChangedReasoningRuleIsRefused) {
  std::ifstream in(qwen3_dir() + "/tokenizer_config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  std::string jinja = config["chat_template"];
  // Keep reasoning for every turn: a plausible edit that changes the output for multi-turn conversations.
  const std::string rule = "loop.index0 > ns.last_query_index";
  ASSERT_NE(jinja.find(rule), std::string::npos);
  jinja.replace(jinja.find(rule), rule.size(), "loop.index0 >= 0");
  config["chat_template"] = jinja;
  const std::string message = error_of([&] { ChatTemplate::from_config_text(config.dump(), "q3.json"); });
  EXPECT_NE(message.find("unsupported chat template in q3.json (a Qwen3 variant"), std::string::npos) << message;
}

TEST(ChatTemplateErrors, InvalidToolJsonNamesTheTool) {
  const ChatTemplate t = ChatTemplate::from_dir(qwen3_dir());
  ChatTemplate::Options options;
  options.tools_json = {"{}", "{not json"};
  EXPECT_NE(error_of([&] { t.render({{"user", "u"}}, options); }).find("tools[1]: invalid JSON"), std::string::npos);
}

TEST(ChatTemplateErrors, Qwen25VariantWithOtherToolCallQuotingIsRefused) {
  std::ifstream in(kFixtures + "/qwen2.5/tokenizer_config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  std::string jinja = config["chat_template"];
  const std::string quoting = "{{- tool_call.arguments | tojson }}";
  ASSERT_NE(jinja.find(quoting), std::string::npos);
  jinja.replace(jinja.find(quoting), quoting.size(), "{{- tool_call.arguments }}");
  config["chat_template"] = jinja;
  const std::string message = error_of([&] { ChatTemplate::from_config_text(config.dump(), "q25.json"); });
  EXPECT_NE(message.find("unsupported chat template in q25.json (a Qwen2.5 variant"), std::string::npos) << message;
}

TEST(ChatTemplateErrors, ChatMLTemplateWritingExtraTextIsRefused) {
  const std::string jinja =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
      "'\\n'}}\n{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  const std::string message = error_of([&] { ChatTemplate::from_config_text(config_with(jinja), "c.json"); });
  EXPECT_NE(message.find("outside"), std::string::npos) << message;
}

}  // namespace
}  // namespace qed
