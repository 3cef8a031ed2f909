#include "server/early_stop_groups.h"

#include <fmt/format.h>

#include <algorithm>

namespace qed::server {

using nlohmann::json;

struct EarlyStopGroups::Group {
  std::string name;  // empty: one request's own group
  EarlyStopPolicy policy{EarlyStop{}};
  Clock::time_point start;
  std::optional<Clock::time_point> deadline;
  std::optional<double> budget_s;  // what the deadline was set from
  double reserved_extra_s = 0;     // drawn from the time bank
  bool banked = false;             // returns unused time to the bank when it ends
  std::vector<Member*> members;
};

namespace {
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

EarlyStop policy_fields(EarlyStop config) {
  config.group.clear();
  return config;
}
}  // namespace

EarlyStopGroups::EarlyStopGroups(EngineService& engine, TimeBankConfig bank)
    : engine_(engine), bank_(bank), bank_s_(bank.initial_s) {
  timer_ = std::thread([this] { run_timer(); });
}

EarlyStopGroups::~EarlyStopGroups() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  timer_wake_.notify_all();
  timer_.join();
}

double EarlyStopGroups::time_bank_s() const {
  std::lock_guard lock(mutex_);
  return bank_s_;
}

std::shared_ptr<EarlyStopGroups::Member> EarlyStopGroups::join(const EarlyStop& config) {
  std::lock_guard lock(mutex_);
  std::shared_ptr<Group> group;
  if (!config.group.empty()) {
    if (auto it = named_.find(config.group); it != named_.end()) {
      group = it->second;
      if (has_early_stop(config) && policy_fields(config) != group->policy.config()) {
        throw ApiError(400,
                       fmt::format("group '{}' is in flight with other early-stop fields; send the same "
                                   "time_budget_s / stop_after_first / consensus or none",
                                   config.group),
                       "qed");
      }
    }
  }
  if (!group) {
    group = std::make_shared<Group>();
    group->name = config.group;
    group->policy = EarlyStopPolicy(policy_fields(config));
    group->start = Clock::now();
    group->budget_s = config.time_budget_s;
    if (!group->name.empty() && bank_.per_question_s > 0) {
      group->banked = true;
      group->reserved_extra_s = std::clamp(bank_s_, 0.0, bank_.max_extra_s);
      bank_s_ -= group->reserved_extra_s;
      const double budget = bank_.per_question_s + group->reserved_extra_s;
      group->budget_s = std::min(group->budget_s.value_or(budget), budget);
    }
    if (group->budget_s) {
      group->deadline =
          group->start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(*group->budget_s));
      deadlines_.emplace(*group->deadline, group);
      timer_wake_.notify_all();
    }
    if (!group->name.empty()) named_.emplace(group->name, group);
  }
  auto member = std::shared_ptr<Member>(new Member(*this, group));
  group->members.push_back(member.get());
  return member;
}

void EarlyStopGroups::cut(Group& group) {
  for (Member* m : group.members) {
    if (m->id_) engine_.abort(*m->id_);  // aborts only the request's unfinished samples
  }
}

void EarlyStopGroups::leave(Member& member) {
  std::lock_guard lock(mutex_);
  Group& group = *member.group_;
  std::erase(group.members, &member);
  if (!group.members.empty()) return;
  if (group.banked) {
    const double unused = bank_.per_question_s + group.reserved_extra_s - seconds_since(group.start);
    bank_s_ += std::max(0.0, unused);
  }
  if (!group.name.empty()) named_.erase(group.name);
}

void EarlyStopGroups::run_timer() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (deadlines_.empty()) {
      timer_wake_.wait(lock);
      continue;
    }
    const auto next = deadlines_.begin()->first;
    if (Clock::now() < next) {
      timer_wake_.wait_until(lock, next);
      continue;
    }
    std::weak_ptr<Group> weak = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    if (auto group = weak.lock(); group && group->policy.decision() == CutReason::None) {
      group->policy.on_deadline();
      cut(*group);
    }
  }
}

EarlyStopGroups::Member::~Member() {
  owner_.leave(*this);
}

void EarlyStopGroups::Member::attach(RequestId id) {
  std::lock_guard lock(owner_.mutex_);
  id_ = id;
  if (group_->policy.decision() != CutReason::None) owner_.engine_.abort(id);
}

void EarlyStopGroups::Member::on_sample_finished(std::string_view text) {
  std::lock_guard lock(owner_.mutex_);
  if (group_->policy.decision() != CutReason::None) return;
  if (group_->policy.on_sample_finished(text) != CutReason::None) owner_.cut(*group_);
}

CutReason EarlyStopGroups::Member::cut_reason() const {
  std::lock_guard lock(owner_.mutex_);
  return group_->policy.decision();
}

json EarlyStopGroups::Member::summary() const {
  std::lock_guard lock(owner_.mutex_);
  const Group& g = *group_;
  const CutReason decision = g.policy.decision();
  const auto answer = g.policy.leading_answer();
  json out = {{"group", g.name.empty() ? json(nullptr) : json(g.name)},
              {"cut", decision == CutReason::None ? json(nullptr) : json(cut_reason_name(decision))},
              {"answer", answer ? json(*answer) : json(nullptr)},
              {"votes", answer ? g.policy.votes(*answer) : 0},
              {"finished", g.policy.num_finished()},
              {"time_budget_s", g.budget_s ? json(*g.budget_s) : json(nullptr)}};
  return out;
}

}  // namespace qed::server
