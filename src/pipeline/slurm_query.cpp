#include "pipeline/slurm_query.h"

#include <fmt/format.h>
#include <unistd.h>

#include <set>
#include <sstream>

#include "pipeline/process.h"

namespace qed::pipeline {

namespace {

std::string base_id(const std::string& id) {
  return id.substr(0, id.find('_'));
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : sep) + i;
  return out;
}

// "id|STATE" lines; sacct adds " by <uid>" to CANCELLED.
void parse_lines(const std::string& text, const std::set<std::string>& wanted, JobStates* out) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto bar = line.find('|');
    if (bar == std::string::npos) continue;
    const std::string id = line.substr(0, bar);
    std::string state = line.substr(bar + 1);
    state = state.substr(0, state.find(' '));
    if (wanted.count(base_id(id)) && !state.empty()) out->emplace(id, state);
  }
}

// `scontrol show job -o ID` prints one line per job/task: "JobId=42 ArrayJobId=42 ArrayTaskId=3 JobState=...".
void query_scontrol(const std::string& job_id, JobStates* out) {
  const auto r = run_capture({"scontrol", "show", "job", "-o", job_id});
  if (r.exit_code != 0) return;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    std::map<std::string, std::string> fields;
    std::istringstream words(line);
    std::string word;
    while (words >> word) {
      const auto eq = word.find('=');
      if (eq != std::string::npos) fields[word.substr(0, eq)] = word.substr(eq + 1);
    }
    if (!fields.count("JobState")) continue;
    std::string id = fields["JobId"];
    if (fields.count("ArrayTaskId")) id = fields["ArrayJobId"] + "_" + fields["ArrayTaskId"];
    out->emplace(id, fields["JobState"]);
  }
}

}  // namespace

JobStates query_queue(const std::vector<std::string>& job_ids) {
  JobStates states;
  if (job_ids.empty()) return states;
  // All of this user's jobs rather than -j: squeue fails outright when any listed id has been purged.
  const auto r = run_capture({"squeue", "-h", "-r", "-u", std::to_string(getuid()), "-o", "%i|%T"});
  if (r.exit_code != 0) return states;
  parse_lines(r.out, std::set<std::string>(job_ids.begin(), job_ids.end()), &states);
  return states;
}

JobStates query_job_states(const std::vector<std::string>& job_ids) {
  JobStates states = query_queue(job_ids);
  std::set<std::string> in_queue;
  for (const auto& [id, state] : states) in_queue.insert(base_id(id));
  std::vector<std::string> finished;
  for (const auto& id : job_ids) {
    if (!in_queue.count(id)) finished.push_back(id);
  }
  if (finished.empty()) return states;
  const auto r = run_capture({"sacct", "-n", "-P", "-X", "-j", join(finished, ","), "-o", "JobID,State"});
  if (r.exit_code == 0) {
    parse_lines(r.out, std::set<std::string>(finished.begin(), finished.end()), &states);
  } else {
    for (const auto& id : finished) query_scontrol(id, &states);
  }
  return states;
}

std::string task_state(const JobStates& states, const std::string& job_id, int shard) {
  if (job_id.empty()) return "";
  if (shard >= 0) {
    const auto it = states.find(fmt::format("{}_{}", job_id, shard));
    if (it != states.end()) return it->second;
    // Pending ranges look like 42_[0-3,5] or 42_[1,3%2]: parse the list of ranges.
    for (const auto& [id, state] : states) {
      if (id.rfind(job_id + "_[", 0) != 0) continue;
      std::string ranges = id.substr(job_id.size() + 2);
      ranges = ranges.substr(0, ranges.find_first_of("]%"));
      std::istringstream in(ranges);
      std::string range;
      while (std::getline(in, range, ',')) {
        const auto dash = range.find('-');
        try {
          const int lo = std::stoi(range.substr(0, dash));
          const int hi = dash == std::string::npos ? lo : std::stoi(range.substr(dash + 1));
          if (shard >= lo && shard <= hi) return state;
        } catch (const std::exception&) {
          continue;
        }
      }
    }
  }
  const auto it = states.find(job_id);
  return it != states.end() ? it->second : "";
}

}  // namespace qed::pipeline
