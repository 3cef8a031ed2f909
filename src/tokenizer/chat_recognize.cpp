#include "tokenizer/chat_recognize.h"

#include <string_view>

#include "core/error.h"
#include "tokenizer/chat_template_scan.h"

namespace qed::chat_recognize {
namespace {

// Statements of each family's template in chat_scan's canonical form (tags only, whitespace outside literals
// removed, ' quotes). Together they cover every statement that writes output, so a template that differs from the
// one the renderer in chat_render.cpp transcribes fails one of them and is refused instead of rendered almost right.
constexpr std::string_view kToolsIntro =
    R"~({{'# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>'}})~";
constexpr std::string_view kToolsList =
    R"~({%fortoolintools%}{{'\n'}}{{tool|tojson}}{%endfor%}{{'\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n'}}{%else%})~";
constexpr std::string_view kToolTurn =
    R"~({%elifmessage.role=='tool'%}{%if(loop.index0==0)or(messages[loop.index0-1].role!='tool')%}{{'<|im_start|>user'}}{%endif%}{{'\n<tool_response>\n'}}{{message.content}}{{'\n</tool_response>'}}{%ifloop.lastor(messages[loop.index0+1].role!='tool')%}{{'<|im_end|>\n'}}{%endif%}{%endif%}{%endfor%})~";

constexpr std::string_view kQwen3Statements[] = {
    R"~({%iftools%}{{'<|im_start|>system\n'}}{%ifmessages[0].role=='system'%}{{messages[0].content+'\n\n'}}{%endif%})~",
    kToolsIntro,
    kToolsList,
    R"~({%else%}{%ifmessages[0].role=='system'%}{{'<|im_start|>system\n'+messages[0].content+'<|im_end|>\n'}}{%endif%}{%endif%})~",
    R"~({%setns=namespace(multi_step_tool=true,last_query_index=messages|length-1)%}{%formessageinmessages[::-1]%}{%setindex=(messages|length-1)-loop.index0%})~",
    R"~({%ifns.multi_step_toolandmessage.role=='user'andnot(message.content.startswith('<tool_response>')andmessage.content.endswith('</tool_response>'))%}{%setns.multi_step_tool=false%}{%setns.last_query_index=index%}{%endif%}{%endfor%})~",
    R"~({%formessageinmessages%}{%if(message.role=='user')or(message.role=='system'andnotloop.first)%}{{'<|im_start|>'+message.role+'\n'+message.content+'<|im_end|>'+'\n'}})~",
    R"~({%elifmessage.role=='assistant'%}{%setcontent=message.content%}{%setreasoning_content=''%}{%ifmessage.reasoning_contentisdefinedandmessage.reasoning_contentisnotnone%}{%setreasoning_content=message.reasoning_content%}{%else%}{%if'</think>'inmessage.content%}{%setcontent=message.content.split('</think>')[-1].lstrip('\n')%}{%setreasoning_content=message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')%}{%endif%}{%endif%})~",
    R"~({%ifloop.index0>ns.last_query_index%}{%ifloop.lastor(notloop.lastandreasoning_content)%}{{'<|im_start|>'+message.role+'\n<think>\n'+reasoning_content.strip('\n')+'\n</think>\n\n'+content.lstrip('\n')}}{%else%}{{'<|im_start|>'+message.role+'\n'+content}}{%endif%}{%else%}{{'<|im_start|>'+message.role+'\n'+content}}{%endif%})~",
    R"~({%ifmessage.tool_calls%}{%fortool_callinmessage.tool_calls%}{%if(loop.firstandcontent)or(notloop.first)%}{{'\n'}}{%endif%}{%iftool_call.function%}{%settool_call=tool_call.function%}{%endif%}{{'<tool_call>\n{"name": "'}}{{tool_call.name}}{{'", "arguments": '}}{%iftool_call.argumentsisstring%}{{tool_call.arguments}}{%else%}{{tool_call.arguments|tojson}}{%endif%}{{'}\n</tool_call>'}}{%endfor%}{%endif%}{{'<|im_end|>\n'}})~",
    R"~({%elifmessage.role=='tool'%}{%ifloop.firstor(messages[loop.index0-1].role!='tool')%}{{'<|im_start|>user'}}{%endif%}{{'\n<tool_response>\n'}}{{message.content}}{{'\n</tool_response>'}}{%ifloop.lastor(messages[loop.index0+1].role!='tool')%}{{'<|im_end|>\n'}}{%endif%}{%endif%}{%endfor%})~",
    R"~({%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}{%ifenable_thinkingisdefinedandenable_thinkingisfalse%}{{'<think>\n\n</think>\n\n'}}{%endif%}{%endif%})~",
};

constexpr std::string_view kQwen25ToolsSystem =
    R"~({%iftools%}{{'<|im_start|>system\n'}}{%ifmessages[0].role=='system'%}{{messages[0].content}})~";
constexpr std::string_view kQwen25System =
    R"~({%else%}{%ifmessages[0].role=='system'%}{{'<|im_start|>system\n'+messages[0].content+'<|im_end|>\n'}})~";
constexpr std::string_view kQwen25Statements[] = {
    kQwen25ToolsSystem,
    R"~({{'\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>'}})~",
    kToolsList,
    kQwen25System,
    R"~({%formessageinmessages%}{%if(message.role=='user')or(message.role=='system'andnotloop.first)or(message.role=='assistant'andnotmessage.tool_calls)%}{{'<|im_start|>'+message.role+'\n'+message.content+'<|im_end|>'+'\n'}})~",
    R"~({%elifmessage.role=='assistant'%}{{'<|im_start|>'+message.role}}{%ifmessage.content%}{{'\n'+message.content}}{%endif%}{%fortool_callinmessage.tool_calls%}{%iftool_call.functionisdefined%}{%settool_call=tool_call.function%}{%endif%}{{'\n<tool_call>\n{"name": "'}}{{tool_call.name}}{{'", "arguments": '}}{{tool_call.arguments|tojson}}{{'}\n</tool_call>'}}{%endfor%}{{'<|im_end|>\n'}})~",
    kToolTurn,
};
constexpr std::string_view kQwen25Ending = R"~({%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}{%endif%})~";

constexpr std::string_view kLlama3Loop =
    R"~({%setloop_messages=messages%}{%formessageinloop_messages%}{%setcontent='<|start_header_id|>'+message.role+'<|end_header_id|>\n\n'+message.content|trim+'<|eot_id|>'%}{%ifloop.index0==0%}{%setcontent=bos_token+content%}{%endif%}{{content}}{%endfor%})~";
constexpr std::string_view kLlama3Header = R"~({{'<|start_header_id|>assistant<|end_header_id|>\n\n'}})~";
constexpr std::string_view kLlama3ConditionalHeader =
    R"~({%ifadd_generation_prompt%}{{'<|start_header_id|>assistant<|end_header_id|>\n\n'}}{%endif%})~";

constexpr std::string_view kChatMLLoopHead = R"~({%formessageinmessages%})~";
constexpr std::string_view kChatMLDefaultSystemHead = R"~({%ifloop.firstandmessages[0].role!='system'%}{{)~";
constexpr std::string_view kChatMLDefaultSystemTail = R"~(}}{%endif%})~";
constexpr std::string_view kChatMLLoopRest =
    R"~({{'<|im_start|>'+message.role+'\n'+message.content+'<|im_end|>'+'\n'}}{%endfor%}{%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}{%endif%})~";

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

[[noreturn]] void unsupported(const std::string& source, std::string_view why) {
  fail("unsupported chat template in {} ({}); supported: Qwen2.5 ChatML, Qwen3, Llama-3, plain ChatML", source, why);
}

void require_all(std::string_view code, const auto& statements, std::string_view family, const std::string& source) {
  for (const std::string_view statement : statements) {
    if (!contains(code, statement)) {
      unsupported(source, fmt::format("a {} variant: no `{}…`", family, statement.substr(0, 72)));
    }
  }
}

// The string literal that `code` holds right after `prefix`, when `suffix` follows it; nullopt otherwise.
std::optional<std::string> literal_between(std::string_view code, std::string_view prefix, std::string_view suffix) {
  const size_t at = code.find(prefix);
  if (at == std::string_view::npos || code.size() <= at + prefix.size() || code[at + prefix.size()] != '\'') {
    return std::nullopt;
  }
  std::string value;
  const size_t quote = at + prefix.size();
  if (!chat_scan::read_string_literal(code, quote, value)) return std::nullopt;
  size_t close = quote + 1;  // first unescaped quote after the opening one
  while (close < code.size() && code[close] != '\'') close += code[close] == '\\' ? 2 : 1;
  if (close >= code.size() || code.substr(close + 1, suffix.size()) != suffix) return std::nullopt;
  return value;
}

// A default system message literal '<|im_start|>system\n…<|im_end|>\n' → its body.
std::optional<std::string> system_turn_body(const std::optional<std::string>& literal) {
  constexpr std::string_view kHead = "<|im_start|>system\n";
  constexpr std::string_view kTail = "<|im_end|>\n";
  if (!literal || !literal->starts_with(kHead) || !literal->ends_with(kTail) ||
      literal->size() < kHead.size() + kTail.size()) {
    return std::nullopt;
  }
  return literal->substr(kHead.size(), literal->size() - kHead.size() - kTail.size());
}

Recognized recognize_qwen25(std::string_view code, const std::string& source) {
  require_all(code, kQwen25Statements, "Qwen2.5", source);
  if (!code.ends_with(kQwen25Ending)) unsupported(source, "a Qwen2.5 variant: unexpected generation prompt");
  Recognized r;
  r.family = ChatTemplateFamily::Qwen25ChatML;
  // Tools branch: the system message or a default text, then the tool list.
  const size_t tools_at = code.find(kQwen25ToolsSystem) + kQwen25ToolsSystem.size();
  const std::string_view after_tools_system = code.substr(tools_at);
  if (after_tools_system.starts_with("{%else%}{{")) {
    r.tools_default_system = literal_between(after_tools_system, "{%else%}{{", "}}{%endif%}{{'\\n\\n# Tools");
    if (!r.tools_default_system) unsupported(source, "a Qwen2.5 variant: unreadable default system text for tools");
  } else if (!after_tools_system.starts_with("{%endif%}{{'\\n\\n# Tools")) {
    unsupported(source, "a Qwen2.5 variant: unexpected statements before the tool list");
  }
  // No-tools branch: the system message, else nothing or the default system turn, then the message loop.
  const std::string_view after_system = code.substr(code.find(kQwen25System) + kQwen25System.size());
  if (after_system.starts_with("{%else%}{{")) {
    r.default_system =
        system_turn_body(literal_between(after_system, "{%else%}{{", "}}{%endif%}{%endif%}{%formessageinmessages%}"));
    if (!r.default_system) unsupported(source, "a Qwen2.5 variant: unreadable default system message");
  } else if (!after_system.starts_with("{%endif%}{%endif%}{%formessageinmessages%}")) {
    unsupported(source, "a Qwen2.5 variant: unexpected statements after the system message");
  }
  return r;
}

Recognized recognize_llama3(std::string_view code, const std::string& source) {
  if (contains(code, "Cutting Knowledge Date") || contains(code, "tools") || contains(code, "ipython")) {
    unsupported(source, "Llama-3.1+ template with date preamble / tools");
  }
  if (!code.starts_with(kLlama3Loop)) unsupported(source, "a Llama-3 variant: unexpected message loop");
  Recognized r;
  r.family = ChatTemplateFamily::Llama3;
  r.uses_bos_token = true;
  const std::string_view rest = code.substr(kLlama3Loop.size());
  if (rest == kLlama3Header) {
    r.generation_prompt_always = true;
  } else if (rest != kLlama3ConditionalHeader) {
    unsupported(source, "a Llama-3 variant: unexpected generation prompt");
  }
  return r;
}

Recognized recognize_plain_chatml(std::string_view code, const std::string& source) {
  Recognized r;
  r.family = ChatTemplateFamily::PlainChatML;
  const std::string_view middle =
      code.substr(kChatMLLoopHead.size(), code.size() - kChatMLLoopHead.size() - kChatMLLoopRest.size());
  if (!middle.empty()) {
    // Qwen2-Instruct: `{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n…' }}`
    r.default_system = system_turn_body(literal_between(middle, kChatMLDefaultSystemHead, kChatMLDefaultSystemTail));
    if (!r.default_system || !middle.starts_with(kChatMLDefaultSystemHead) ||
        !middle.ends_with(kChatMLDefaultSystemTail)) {
      unsupported(source, "a ChatML variant: unexpected statements in the message loop");
    }
  }
  return r;
}

}  // namespace

Recognized recognize(const std::string& jinja, const std::string& source) {
  const chat_scan::TemplateShape shape = chat_scan::scan(jinja);
  if (shape.unterminated_tag) unsupported(source, "unterminated Jinja tag");
  if (!shape.literal_text.empty()) unsupported(source, "template writes text outside {{ }} tags");
  const std::string_view code = shape.code;
  const bool chatml = contains(code, "<|im_start|>");
  if (chatml && (contains(code, "<think>") || contains(code, "enable_thinking"))) {
    require_all(code, kQwen3Statements, "Qwen3", source);
    Recognized r;
    r.family = ChatTemplateFamily::Qwen3;
    return r;
  }
  if (chatml && contains(code, "<tool_response>")) return recognize_qwen25(code, source);
  if (contains(code, "<|start_header_id|>")) return recognize_llama3(code, source);
  if (code.starts_with(kChatMLLoopHead) && code.ends_with(kChatMLLoopRest) &&
      code.size() >= kChatMLLoopHead.size() + kChatMLLoopRest.size()) {
    return recognize_plain_chatml(code, source);
  }
  unsupported(source, "no known family markers");
}

}  // namespace qed::chat_recognize
