#pragma once
// Applies early-stop policies to requests in flight. Every request with early-stop fields is a member of a group:
// its own anonymous one, or a named one (`"qed": {"group": "problem-7"}`) shared by all requests naming it while
// any of them is in flight, so 12 single-sample requests can be one ensemble as 1 request with n = 12. When the
// group's policy decides, or its deadline passes, every member's unfinished samples are aborted in the engine
// (finished ones keep their text) and the responses say why.
//
// Time bank (AIMO-2: 350 s per question, unused time banked, at most 210 s extra): with a per-question budget
// configured, each named group is a question. At its start it reserves min(bank, max_extra) from the bank, runs
// under per_question + reserved seconds, and when its last request ends, returns what it did not use.
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "server/early_stop.h"
#include "server/engine_service.h"

namespace qed::server {

struct TimeBankConfig {
  double per_question_s = 0;  // 0 = no time bank
  double max_extra_s = 0;     // most a question may draw from the bank
  double initial_s = 0;       // the bank at start
};

class EarlyStopGroups {
 public:
  class Member;

  EarlyStopGroups(EngineService& engine, TimeBankConfig bank);
  ~EarlyStopGroups();  // members must be gone (they are once the engine has finished every request)
  EarlyStopGroups(const EarlyStopGroups&) = delete;
  EarlyStopGroups& operator=(const EarlyStopGroups&) = delete;

  // Joins (or opens) the request's group. Throws ApiError 400 when a named group is open with other early-stop
  // fields than these (a request may also omit them and take the group's).
  std::shared_ptr<Member> join(const EarlyStop& config);
  static bool wants_group(const EarlyStop& config) { return has_early_stop(config) || !config.group.empty(); }
  double time_bank_s() const;

 private:
  struct Group;
  void cut(Group& group);  // mutex_ held
  void leave(Member& member);
  void run_timer();

  EngineService& engine_;
  TimeBankConfig bank_;
  mutable std::mutex mutex_;
  std::condition_variable timer_wake_;
  std::map<std::string, std::shared_ptr<Group>> named_;
  std::multimap<Clock::time_point, std::weak_ptr<Group>> deadlines_;
  double bank_s_ = 0;
  bool stopping_ = false;
  std::thread timer_;
};

// One request's membership. attach() once the engine id is known; the rest from the engine thread's callbacks.
class EarlyStopGroups::Member {
 public:
  ~Member();
  Member(const Member&) = delete;
  Member& operator=(const Member&) = delete;

  // Gives the group the request's engine id; a group that decided already cuts the request at once.
  void attach(RequestId id);
  // A sample of this request ended by itself (stop or length) with this text.
  void on_sample_finished(std::string_view text);
  // The group's decision (None while undecided): a sample of this request that ended with "abort" was cut for it.
  CutReason cut_reason() const;
  // {"group", "cut", "answer", "votes", "finished", "time_budget_s"}: what the response's `qed` object says.
  nlohmann::json summary() const;

 private:
  friend class EarlyStopGroups;
  Member(EarlyStopGroups& owner, std::shared_ptr<Group> group) : owner_(owner), group_(std::move(group)) {}
  EarlyStopGroups& owner_;
  std::shared_ptr<Group> group_;
  std::optional<RequestId> id_;
};

}  // namespace qed::server
