#include "sandbox/sandbox_service.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "core/error.h"
#include "sandbox/jail.h"
#include "sandbox/output_text.h"
#include "sandbox/worker_source.h"
#include "server/http/http_message.h"

namespace qed::sandbox {

using http::HttpError;
using nlohmann::json;

namespace {

std::string timeout_message(const std::string& timeout_text) {
  return "Execution timed out after " + timeout_text + " seconds\n";
}

// Python's str for pipe bytes, then the client's cut.
std::string shaped(const std::string& bytes, size_t max_chars, bool plain) {
  std::string text = to_valid_utf8(bytes);
  if (plain) text = postprocess_plain(text);
  return cut_output(text, max_chars);
}

template <typename T>
T field_or(const json& body, const char* name, T fallback, bool (json::*check)() const, const char* expected) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return fallback;
  if (!((*it).*check)()) throw HttpError(400, fmt::format("'{}' must be {}", name, expected));
  return it->get<T>();
}

}  // namespace

SandboxService::SandboxService(SandboxConfig config) : config_(std::move(config)) {
  config_.jail = resolve_jail_config(config_.jail);
  if (config_.jail.insecure_no_jail) {
    spdlog::warn(
        "sandbox: !!! --insecure-no-jail: code runs WITHOUT namespaces or seccomp, as this user, with "
        "network access. Development only; never expose this service !!!");
  }
  pool_ = std::make_unique<WorkerPool>(config_, std::string(kWorkerSource));
  sessions_ = std::make_unique<SessionManager>(config_.max_sessions, config_.session_idle_s);
}

SandboxService::~SandboxService() {
  // Calls in flight use the pool and the sessions: kill the session workers so those calls end now, wait for
  // them, then tear down.
  {
    std::lock_guard lock(in_flight_mutex_);
    stopping_ = true;
  }
  sessions_->close_all();
  std::unique_lock lock(in_flight_mutex_);
  in_flight_done_.wait(lock, [&] { return in_flight_ == 0; });
  lock.unlock();
  sessions_.reset();
  pool_.reset();
}

size_t SandboxService::keep_chars(size_t max_chars) const {
  // Slack beyond the cut point so post-processing (rstrip, dropped lines) sees what decides the result; a
  // ceiling so a client asking for 10^9 characters cannot make us buffer that much.
  constexpr size_t kSlack = 1024;
  constexpr size_t kCeiling = 1 << 20;
  return std::min(max_chars + kSlack, kCeiling);
}

json SandboxService::execute(const json& body, const std::optional<std::string>& session_header) {
  if (!body.is_object()) throw HttpError(400, "request body must be a JSON object");
  auto code_it = body.find("generated_code");
  if (code_it == body.end() || !code_it->is_string()) {
    throw HttpError(400, "'generated_code' is required and must be a string");
  }
  json timeout_value =
      body.contains("timeout") && !body["timeout"].is_null() ? body["timeout"] : json(config_.default_timeout_s);
  if (!timeout_value.is_number() || timeout_value.get<double>() < 0) {
    throw HttpError(400, "'timeout' must be a non-negative number of seconds");
  }
  double timeout_s = std::min(timeout_value.get<double>(), config_.max_timeout_s);
  std::string timeout_text = python_number_text(timeout_value);
  auto language = field_or<std::string>(body, "language", "ipython", &json::is_string, "a string");
  auto std_input = field_or<std::string>(body, "std_input", "", &json::is_string, "a string");
  auto verbosity = field_or<std::string>(body, "traceback_verbosity", "Plain", &json::is_string, "a string");
  auto max_chars_value = body.contains("max_output_characters") && !body["max_output_characters"].is_null()
                             ? body["max_output_characters"]
                             : json(config_.default_max_output_chars);
  if (!max_chars_value.is_number_integer() || max_chars_value.get<int64_t>() < 0) {
    throw HttpError(400, "'max_output_characters' must be a non-negative integer");
  }
  auto max_chars = static_cast<size_t>(max_chars_value.get<int64_t>());
  const std::string& code = code_it->get_ref<const std::string&>();

  if (language == "ipython") {
    std::optional<std::string> id = session_header;
    // Older NeMo-Skills clients sent the id in the body instead of the header.
    if (!id && body.contains("session_id") && body["session_id"].is_string())
      id = body["session_id"].get<std::string>();
    if (!id || id->empty()) throw HttpError(400, "X-Session-ID header required for ipython sessions");
    // IPython's post-processing applies to these modes only (NeMo-Skills' postprocess_output).
    bool plain = verbosity == "Plain" || verbosity == "Minimal";
    return run_in_session(*id, code, timeout_s, timeout_text, max_chars, plain);
  }
  if (language == "python" || language == "python3" || language == "pypy3") {
    return run_script(code, std_input, timeout_s, timeout_text, max_chars);
  }
  throw HttpError(400, fmt::format("unsupported language '{}' (supported: ipython, python, python3, pypy3)", language));
}

json SandboxService::run_in_session(const std::string& session_id, const std::string& code, double timeout_s,
                                    const std::string& timeout_text, size_t max_chars, bool plain) {
  auto started = std::chrono::steady_clock::now();
  auto [session, created] = sessions_->acquire(session_id);
  std::lock_guard run_lock(session->run_mutex);
  session->busy = true;
  struct BusyReset {
    Session& s;
    ~BusyReset() {
      s.busy = false;
      s.last_used = SessionManager::now();
    }
  } busy_reset{*session};
  if (session->closed) throw HttpError(409, "IPython session " + session_id + " was deleted during this call");

  bool new_session = created || session->restart_pending;
  session->restart_pending = false;
  WorkerProcess* worker = nullptr;
  {
    std::lock_guard lock(session->worker_mutex);
    if (!session->worker || !session->worker->alive()) {
      if (session->worker) new_session = true;  // died between calls (killed from outside, expired...)
      session->worker.reset();
    }
    worker = session->worker.get();
  }
  if (!worker) {
    auto fresh = pool_->take();  // may take a jail start; not under worker_mutex
    std::lock_guard lock(session->worker_mutex);
    session->worker = std::move(fresh);
    worker = session->worker.get();
    if (session->closed) worker->kill();
  }

  RunRequest request;
  request.mode = RunMode::Cell;
  request.code = code;
  request.timeout_s = timeout_s;
  request.kill_grace_s = config_.kill_grace_s;
  request.keep_chars = keep_chars(max_chars);
  RunResult result = worker->run(request);

  json out;
  ExecStatus status = ExecStatus::Completed;
  switch (result.outcome) {
    case RunOutcome::Completed:
    case RunOutcome::Error:
      status = result.outcome == RunOutcome::Completed ? ExecStatus::Completed : ExecStatus::Error;
      out = {{"process_status", status == ExecStatus::Completed ? "completed" : "error"},
             {"stdout", shaped(result.stdout_bytes, max_chars, plain)},
             {"stderr", shaped(result.stderr_bytes, max_chars, plain)}};
      break;
    case RunOutcome::Interrupted:
      status = ExecStatus::Timeout;
      out = {{"process_status", "timeout"},
             {"stdout", shaped(result.stdout_bytes, max_chars, plain)},
             {"stderr", shaped(result.stderr_bytes + timeout_message(timeout_text), max_chars, plain)}};
      break;
    case RunOutcome::Killed:
    case RunOutcome::Crashed: {
      bool killed = result.outcome == RunOutcome::Killed;
      killed ? metrics_.count_kill() : metrics_.count_crash();
      {
        // The state is gone: the next call starts on a fresh worker and is told new_session_created.
        std::lock_guard lock(session->worker_mutex);
        session->worker.reset();
      }
      session->restart_pending = true;
      new_session = true;
      if (killed) {
        status = ExecStatus::Timeout;
        out = {{"process_status", "timeout"},
               {"stdout", ""},
               {"stderr", cut_output(timeout_message(timeout_text), max_chars)}};
      } else {
        status = ExecStatus::Error;
        std::string why = "The Python worker of this session died (" + result.detail + "); its state was lost.";
        out = {{"process_status", "error"},
               {"stdout", shaped(result.stdout_bytes, max_chars, plain)},
               {"stderr", shaped(result.stderr_bytes + "\n" + why + "\n", max_chars, plain)}};
      }
      break;
    }
  }
  out["new_session_created"] = new_session;
  metrics_.record(true, status, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return out;
}

json SandboxService::run_script(const std::string& code, const std::string& stdin_text, double timeout_s,
                                const std::string& timeout_text, size_t max_chars) {
  auto started = std::chrono::steady_clock::now();
  // A script gets a worker of its own, used once: `python3 -c` semantics include a fresh interpreter.
  auto worker = pool_->take();
  RunRequest request;
  request.mode = RunMode::Script;
  request.code = code;
  request.stdin_text = stdin_text;
  request.timeout_s = timeout_s;
  request.kill_grace_s = config_.kill_grace_s;
  request.keep_chars = keep_chars(max_chars);
  RunResult result = worker->run(request);
  worker.reset();
  json out;
  ExecStatus status = ExecStatus::Completed;
  if (result.outcome == RunOutcome::Interrupted || result.outcome == RunOutcome::Killed) {
    // NeMo-Skills reports a timed-out subprocess with empty stdout.
    status = ExecStatus::Timeout;
    if (result.outcome == RunOutcome::Killed) metrics_.count_kill();
    out = {{"process_status", "timeout"},
           {"stdout", ""},
           {"stderr", cut_output(timeout_message(timeout_text), max_chars)}};
  } else {
    // A subprocess is "completed" whatever its exit: errors show in stderr only (a crash included).
    if (result.outcome == RunOutcome::Crashed) metrics_.count_crash();
    out = {{"process_status", "completed"},
           {"stdout", shaped(result.stdout_bytes, max_chars, false)},
           {"stderr", shaped(result.stderr_bytes, max_chars, false)}};
  }
  metrics_.record(false, status, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return out;
}

http::Router SandboxService::router() {
  http::Router r;
  r.add("POST", "/execute", [this](const http::Request& req, http::Respond respond) {
    {
      std::lock_guard lock(in_flight_mutex_);
      if (stopping_) throw HttpError(503, "sandbox is shutting down");
      if (in_flight_ >= static_cast<int>(config_.max_sessions) + 64) {
        metrics_.count_rejected();
        throw HttpError(503, "sandbox is at capacity; retry later");
      }
      ++in_flight_;
    }
    json body;
    try {
      body = req.json_body();
    } catch (...) {
      std::lock_guard lock(in_flight_mutex_);
      --in_flight_;
      in_flight_done_.notify_all();
      metrics_.count_rejected();
      throw;
    }
    auto session = req.header("X-Session-ID");
    // Calls block for up to their timeout: each gets its own thread, the I/O threads stay free.
    std::thread([this, body = std::move(body), session, respond = std::move(respond)] {
      http::Response response;
      try {
        response = http::Response::json(200, execute(body, session));
      } catch (const HttpError& e) {
        metrics_.count_rejected();
        response = http::Response::error(e.status(), e.what());
      } catch (const std::exception& e) {
        spdlog::error("sandbox: /execute failed: {}", e.what());
        response = http::Response::error(500, std::string("sandbox failure: ") + e.what());
      }
      respond(std::move(response));
      std::lock_guard lock(in_flight_mutex_);
      --in_flight_;
      in_flight_done_.notify_all();
    }).detach();
  });
  r.add_sync("GET", "/sessions", [this](const http::Request&) {
    json sessions = json::object();
    for (const auto& s : sessions_->list()) {
      // "busy" (a call is running) is ours; the rest is NeMo-Skills' shape.
      sessions[s.id] = {{"backend", "ipython"},
                        {"created", s.created},
                        {"last_used", s.last_used},
                        {"alive", true},
                        {"busy", s.busy}};
    }
    return http::Response::json(200, {{"sessions", sessions}, {"backend", "ipython"}});
  });
  r.add_sync("DELETE", "/sessions/{id}", [this](const http::Request& req) {
    const std::string& id = req.path_params.at("id");
    if (sessions_->remove(id)) {
      return http::Response::json(200, {{"message", "IPython session " + id + " deleted successfully"}});
    }
    return http::Response::error(404, "IPython session " + id + " not found");
  });
  r.add_sync("GET", "/health", [this](const http::Request&) {
    return http::Response::json(
        200,
        {{"status", "healthy"}, {"worker", "0"}, {"sessions", sessions_->size()}, {"idle_workers", pool_->idle()}});
  });
  r.add_sync("GET", "/metrics", [this](const http::Request&) {
    int in_flight = 0;
    {
      std::lock_guard lock(in_flight_mutex_);
      in_flight = in_flight_;
    }
    SandboxMetrics::Gauges g{sessions_->size(),       pool_->idle(),        pool_->spawned(),
                             pool_->spawn_failures(), sessions_->expired(), in_flight};
    return http::Response::text(200, metrics_.render(g), "text/plain; version=0.0.4; charset=utf-8");
  });
  return r;
}

}  // namespace qed::sandbox
