// eqsim eval submit | watch | get | list | cancel | scores | compare
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"

ABSL_FLAG(std::string, format, "",
          "Benchmark format: winoground, eqben-pairs, eqben-video, eqben-ag, "
          "eqben-leaderboard, valse");
ABSL_FLAG(std::string, annotation, "",
          "Annotation file (eval submit: relative to the server's --data-root; eval-local: a "
          "local path)");
ABSL_FLAG(std::string, image_root, "", "Image root (same convention as --annotation)");
ABSL_FLAG(std::vector<std::string>, image_roots, {},
          "VALSE: per-source image roots, dataset=root (repeatable or comma separated)");
ABSL_FLAG(std::vector<std::string>, subsets, {}, "Keep only these subsets (default: all)");
ABSL_FLAG(int64_t, limit, 0, "At most this many samples per subset (0 = all)");
ABSL_FLAG(bool, keep_scores, false, "Keep per-sample scores (downloadable with eval scores)");
ABSL_FLAG(bool, valse_all, false, "VALSE: score every entry, not only the valid ones");
ABSL_FLAG(std::string, label, "", "Free text shown in listings");
ABSL_FLAG(bool, watch, false, "eval submit: follow the job until it ends (exit 3 if it fails)");
ABSL_FLAG(std::string, scores_output, "",
          "Write the per-sample score file (.npy) here when the evaluation succeeds");
ABSL_FLAG(std::vector<std::string>, state, {},
          "eval list: only jobs in these states (queued, running, succeeded, failed, cancelled)");
ABSL_FLAG(int32_t, watch_reconnects, 30,
          "Consecutive failed reconnections of a dropped watch stream before giving up");

ABSL_DECLARE_FLAG(std::string, output);

namespace eqsim::cli {
namespace {

absl::StatusOr<std::string> OneId(const ParsedArgs& args) {
  if (args.positional.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected exactly one evaluation ID, got ", args.positional.size(), " arguments"));
  }
  return args.positional[0];
}

absl::StatusOr<std::unique_ptr<Client>> EvalClient() {
  auto o = ClientOptionsFromFlags();
  if (!o.ok()) return o.status();
  o->watch_max_reconnects = absl::GetFlag(FLAGS_watch_reconnects);
  return Client::Create(*std::move(o));
}

int ExitForFinal(const v1::Evaluation& ev) {
  return ev.state() == v1::SUCCEEDED ? kExitOk : kExitJobFailed;
}

// Prints the final state and downloads the scores if asked.
int Conclude(const std::string& cmd, Client& client, const v1::Evaluation& ev) {
  if (JsonOutput()) {
    std::printf("%s\n", ToJson(ev).c_str());
  } else {
    std::printf("%s", DescribeEvaluation(ev, true).c_str());
  }
  const std::string scores = absl::GetFlag(FLAGS_scores_output);
  if (ev.state() == v1::SUCCEEDED && !scores.empty()) {
    auto n = client.DownloadScores(ev.id(), scores);
    if (!n.ok()) return Fail(cmd, n.status(), kExitRpcError);
    std::fprintf(stderr, "wrote %lld bytes of scores to %s\n", static_cast<long long>(*n),
                 scores.c_str());
  }
  if (ev.state() == v1::FAILED) {
    std::fprintf(stderr, "eqsim %s: evaluation %s failed: %s\n", cmd.c_str(), ev.id().c_str(),
                 ev.error().c_str());
  } else if (ev.state() == v1::CANCELLED) {
    std::fprintf(stderr, "eqsim %s: evaluation %s was cancelled\n", cmd.c_str(), ev.id().c_str());
  }
  return ExitForFinal(ev);
}

// Follows a job with a progress bar; returns the exit code.
int WatchWithProgress(const std::string& cmd, Client& client, const std::string& id,
                      const v1::Evaluation* submitted) {
  ProgressBar bar(absl::StrCat("evaluation ", id));
  auto on_event = [&](const v1::Evaluation& ev) {
    std::string suffix = StateName(ev.state());
    if (ev.progress().samples_per_second() > 0)
      absl::StrAppendFormat(&suffix, ", %.1f samples/s", ev.progress().samples_per_second());
    bar.Update(ev.progress().done(), ev.progress().total(), suffix);
  };
  auto on_reconnect = [&](const absl::Status& cause, int attempt) {
    bar.Note(absl::StrCat("watch stream dropped (", absl::StatusCodeToString(cause.code()), ": ",
                          cause.message(), "); reconnecting, attempt ", attempt));
  };
  if (submitted != nullptr) on_event(*submitted);
  auto final_state = client.WatchEvaluation(id, on_event, on_reconnect);
  bar.Finish();
  if (!final_state.ok()) return Fail(cmd, final_state.status(), kExitRpcError);
  return Conclude(cmd, client, *final_state);
}

int RunSubmit(const ParsedArgs& args) {
  const std::string cmd = "eval submit";
  if (!args.positional.empty()) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat("unexpected argument '",
                                                             args.positional[0], "'")),
                kExitUsage);
  }
  v1::EvaluationSpec spec;
  auto format = ParseFormat(absl::GetFlag(FLAGS_format));
  if (!format.ok()) return Fail(cmd, format.status(), kExitUsage);
  spec.set_format(*format);
  if (absl::GetFlag(FLAGS_annotation).empty()) {
    return Fail(cmd, absl::InvalidArgumentError("--annotation is required"), kExitUsage);
  }
  spec.set_annotation_path(absl::GetFlag(FLAGS_annotation));
  spec.set_image_root(absl::GetFlag(FLAGS_image_root));
  for (const std::string& kv : absl::GetFlag(FLAGS_image_roots)) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || p.second.empty()) {
      return Fail(cmd, absl::InvalidArgumentError(absl::StrCat(
                           "--image-roots entry '", kv, "' is not dataset=root")),
                  kExitUsage);
    }
    (*spec.mutable_image_roots())[p.first] = p.second;
  }
  for (const std::string& s : absl::GetFlag(FLAGS_subsets)) spec.add_subsets(s);
  if (absl::GetFlag(FLAGS_limit) < 0) {
    return Fail(cmd, absl::InvalidArgumentError("--limit must be >= 0"), kExitUsage);
  }
  spec.set_limit(absl::GetFlag(FLAGS_limit));
  spec.set_keep_scores(absl::GetFlag(FLAGS_keep_scores) ||
                       !absl::GetFlag(FLAGS_scores_output).empty());
  spec.set_valse_all(absl::GetFlag(FLAGS_valse_all));
  spec.set_label(absl::GetFlag(FLAGS_label));
  const ModelSelector m = ModelFromFlags();
  spec.mutable_model()->set_name(m.name);
  spec.mutable_model()->set_version(m.version);

  auto client = EvalClient();
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  auto job = (*client)->SubmitEvaluation(spec);
  if (!job.ok()) return Fail(cmd, job.status(), kExitRpcError);
  if (!absl::GetFlag(FLAGS_watch)) {
    if (JsonOutput()) {
      std::printf("%s\n", ToJson(*job).c_str());
    } else {
      std::printf("%s\n", job->id().c_str());
      std::fprintf(stderr, "submitted evaluation %s (%s); follow it with: eqsim eval watch %s\n",
                   job->id().c_str(), StateName(job->state()).c_str(), job->id().c_str());
    }
    return kExitOk;
  }
  if (!JsonOutput()) std::fprintf(stderr, "submitted evaluation %s\n", job->id().c_str());
  if (IsTerminal(job->state())) return Conclude(cmd, **client, *job);
  return WatchWithProgress(cmd, **client, job->id(), &*job);
}

int RunWatch(const ParsedArgs& args) {
  const std::string cmd = "eval watch";
  auto id = OneId(args);
  if (!id.ok()) return Fail(cmd, id.status(), kExitUsage);
  auto client = EvalClient();
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  return WatchWithProgress(cmd, **client, *id, nullptr);
}

int RunGet(const ParsedArgs& args) {
  const std::string cmd = "eval get";
  auto id = OneId(args);
  if (!id.ok()) return Fail(cmd, id.status(), kExitUsage);
  auto client = EvalClient();
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  auto ev = (*client)->GetEvaluation(*id);
  if (!ev.ok()) return Fail(cmd, ev.status(), kExitRpcError);
  if (JsonOutput()) {
    std::printf("%s\n", ToJson(*ev).c_str());
  } else {
    std::printf("%s", DescribeEvaluation(*ev, true).c_str());
  }
  // Exit code reflects the job like watch does, so scripts can poll with `get`.
  return ev->state() == v1::FAILED || ev->state() == v1::CANCELLED ? kExitJobFailed : kExitOk;
}

int RunList(const ParsedArgs& args) {
  const std::string cmd = "eval list";
  if (!args.positional.empty()) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat("unexpected argument '",
                                                             args.positional[0], "'")),
                kExitUsage);
  }
  std::vector<v1::JobState> states;
  for (const std::string& s : absl::GetFlag(FLAGS_state)) {
    auto st = ParseJobState(s);
    if (!st.ok()) return Fail(cmd, st.status(), kExitUsage);
    states.push_back(*st);
  }
  auto client = EvalClient();
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  auto list = (*client)->ListEvaluations(states);
  if (!list.ok()) return Fail(cmd, list.status(), kExitRpcError);
  if (JsonOutput()) {
    v1::ListEvaluationsResponse resp;
    for (const auto& ev : *list) *resp.add_evaluations() = ev;
    std::printf("%s\n", ToJson(resp).c_str());
    return kExitOk;
  }
  std::printf("%-24s %-10s %-20s %-18s %15s %8s  %s\n", "ID", "STATE", "MODEL", "FORMAT",
              "PROGRESS", "GROUP%", "LABEL");
  for (const auto& ev : *list) {
    std::string group = "-";
    if (ev.state() == v1::SUCCEEDED && ev.has_result())
      group = absl::StrFormat("%.2f", 100 * ev.result().overall().group_score());
    std::printf("%-24s %-10s %-20s %-18s %15s %8s  %s\n", ev.id().c_str(),
                StateName(ev.state()).c_str(),
                absl::StrCat(ev.model().name(), " v", ev.model().version()).c_str(),
                FormatName(ev.spec().format()).c_str(),
                absl::StrCat(ev.progress().done(), "/", ev.progress().total()).c_str(),
                group.c_str(), ev.spec().label().c_str());
  }
  return kExitOk;
}

int RunCancel(const ParsedArgs& args) {
  const std::string cmd = "eval cancel";
  auto id = OneId(args);
  if (!id.ok()) return Fail(cmd, id.status(), kExitUsage);
  auto client = EvalClient();
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  auto ev = (*client)->CancelEvaluation(*id);
  if (!ev.ok()) return Fail(cmd, ev.status(), kExitRpcError);
  if (JsonOutput()) {
    std::printf("%s\n", ToJson(*ev).c_str());
  } else {
    std::printf("evaluation %s: %s\n", ev->id().c_str(), StateName(ev->state()).c_str());
  }
  return kExitOk;
}

int RunScores(const ParsedArgs& args) {
  const std::string cmd = "eval scores";
  auto id = OneId(args);
  if (!id.ok()) return Fail(cmd, id.status(), kExitUsage);
  std::string out = absl::GetFlag(FLAGS_output);
  if (out.empty()) out = absl::GetFlag(FLAGS_scores_output);
  if (out.empty()) {
    return Fail(cmd, absl::InvalidArgumentError("--output FILE is required"), kExitUsage);
  }
  auto client = EvalClient();
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  auto n = (*client)->DownloadScores(*id, out);
  if (!n.ok()) return Fail(cmd, n.status(), kExitRpcError);
  if (JsonOutput()) {
    std::printf("{\"id\":\"%s\",\"path\":\"%s\",\"bytes\":%lld}\n", id->c_str(), out.c_str(),
                static_cast<long long>(*n));
  } else {
    std::printf("wrote %lld bytes to %s\n", static_cast<long long>(*n), out.c_str());
  }
  return kExitOk;
}

// The cells of one job's columns: "samples", then the scores of its format.
std::vector<std::string> CompareColumns(const v1::Evaluation& ev) {
  switch (ev.spec().format()) {
    case v1::VALSE:
      return {"samples", "pairwise%"};
    case v1::EQBEN_LEADERBOARD:
      return {"samples"};
    default:
      return {"samples", "text%", "image%", "group%"};
  }
}

std::vector<std::string> CompareCells(const v1::Evaluation& ev, const v1::SubsetResult* r) {
  const size_t n = CompareColumns(ev).size();
  if (r == nullptr) return std::vector<std::string>(n, "-");
  std::vector<std::string> cells = {absl::StrCat(r->samples())};
  auto pct = [](double v) { return absl::StrFormat("%.2f", 100.0 * v); };
  if (ev.spec().format() == v1::VALSE) {
    cells.push_back(pct(r->pairwise_accuracy()));
  } else if (n == 4) {
    cells.push_back(pct(r->text_score()));
    cells.push_back(pct(r->image_score()));
    cells.push_back(pct(r->group_score()));
  }
  return cells;
}

int RunCompare(const ParsedArgs& args) {
  const std::string cmd = "eval compare";
  if (args.positional.empty()) {
    return Fail(cmd, absl::InvalidArgumentError("expected one or more evaluation IDs"),
                kExitUsage);
  }
  auto client = EvalClient();
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  std::vector<v1::Evaluation> evs;
  for (const std::string& id : args.positional) {
    auto ev = (*client)->GetEvaluation(id);
    if (!ev.ok()) return Fail(cmd, ev.status(), kExitRpcError);
    evs.push_back(*std::move(ev));
  }
  bool all_succeeded = true;
  for (const auto& ev : evs) all_succeeded = all_succeeded && ev.state() == v1::SUCCEEDED;
  if (JsonOutput()) {
    std::vector<std::string> parts;
    for (const auto& ev : evs) parts.push_back(ToJson(ev));
    std::printf("[%s]\n", absl::StrJoin(parts, ",").c_str());
  } else {
    // Rows: every subset in order of first appearance over the jobs, then "overall".
    std::vector<std::string> subsets;
    for (const auto& ev : evs) {
      for (const auto& r : ev.result().subsets()) {
        if (std::find(subsets.begin(), subsets.end(), r.subset()) == subsets.end())
          subsets.push_back(r.subset());
      }
    }
    auto find = [](const v1::Evaluation& ev, const std::string& name) -> const v1::SubsetResult* {
      if (ev.state() != v1::SUCCEEDED) return nullptr;
      if (name == "overall" && ev.has_result()) return &ev.result().overall();
      for (const auto& r : ev.result().subsets())
        if (r.subset() == name) return &r;
      return nullptr;
    };
    std::vector<std::string> rows = subsets;
    rows.push_back("overall");
    size_t name_width = 7;
    for (const auto& r : rows) name_width = std::max(name_width, r.size());
    // Per job: a title (model:version and label, or the state when it did not succeed), the
    // column names, and the cells; every column of a job 8 wide at least.
    struct JobColumns {
      std::string title;
      std::vector<std::string> names;
      std::vector<std::vector<std::string>> cells;  // per row
      size_t width = 0;
    };
    std::vector<JobColumns> jobs;
    for (const auto& ev : evs) {
      JobColumns j;
      const std::string model_name =
          ev.model().name().empty() ? ev.spec().model().name() : ev.model().name();
      j.title = absl::StrCat(model_name.empty() ? "default" : model_name, ":",
                             ev.model().version());
      if (!ev.spec().label().empty()) absl::StrAppend(&j.title, " (", ev.spec().label(), ")");
      if (ev.state() != v1::SUCCEEDED) absl::StrAppend(&j.title, " [", StateName(ev.state()), "]");
      j.names = CompareColumns(ev);
      for (const auto& r : rows) j.cells.push_back(CompareCells(ev, find(ev, r)));
      j.width = j.names.size() * 10 - 2;
      j.width = std::max(j.width, j.title.size());
      jobs.push_back(std::move(j));
    }
    auto cols = [](const std::vector<std::string>& v, size_t width) {
      std::string out;
      for (const auto& c : v) absl::StrAppendFormat(&out, "%s%8s", out.empty() ? "" : "  ", c);
      return absl::StrFormat("%*s", static_cast<int>(width), out);
    };
    for (size_t k = 0; k < evs.size(); ++k) {
      const auto& ev = evs[k];
      std::printf("[%zu] %s  %s  %s %s%s\n", k + 1, ev.id().c_str(), jobs[k].title.c_str(),
                  FormatName(ev.spec().format()).c_str(), ev.spec().annotation_path().c_str(),
                  ev.state() == v1::SUCCEEDED ? ""
                  : ev.error().empty()        ? absl::StrCat("  ", StateName(ev.state())).c_str()
                                              : absl::StrCat("  ", StateName(ev.state()), ": ",
                                                             ev.error()).c_str());
    }
    std::string line = absl::StrFormat("%-*s", static_cast<int>(name_width), "");
    for (size_t k = 0; k < jobs.size(); ++k) {
      const std::string t = absl::StrCat("[", k + 1, "] ", jobs[k].title);
      jobs[k].width = std::max(jobs[k].width, t.size());
      absl::StrAppendFormat(&line, " | %-*s", static_cast<int>(jobs[k].width), t);
    }
    std::printf("%s\n", std::string(absl::StripTrailingAsciiWhitespace(line)).c_str());
    line = absl::StrFormat("%-*s", static_cast<int>(name_width), "subset");
    for (const auto& j : jobs) absl::StrAppend(&line, " | ", cols(j.names, j.width));
    std::printf("%s\n", std::string(absl::StripTrailingAsciiWhitespace(line)).c_str());
    for (size_t r = 0; r < rows.size(); ++r) {
      line = absl::StrFormat("%-*s", static_cast<int>(name_width), rows[r]);
      for (const auto& j : jobs) absl::StrAppend(&line, " | ", cols(j.cells[r], j.width));
      std::printf("%s\n", std::string(absl::StripTrailingAsciiWhitespace(line)).c_str());
    }
  }
  if (!all_succeeded) {
    for (const auto& ev : evs) {
      if (ev.state() == v1::SUCCEEDED) continue;
      std::fprintf(stderr, "eqsim %s: evaluation %s is %s%s\n", cmd.c_str(), ev.id().c_str(),
                   StateName(ev.state()).c_str(),
                   ev.error().empty() ? "" : absl::StrCat(": ", ev.error()).c_str());
    }
    return kExitJobFailed;
  }
  return kExitOk;
}

}  // namespace

std::vector<Command> EvalCommands() {
  return {
      {"eval submit", "",
       "Submit a benchmark evaluation to the server; prints the job ID (or follows it with "
       "--watch)",
       "Paths are relative to the server's --data-root.\nExample: eqsim eval submit --format "
       "eqben-pairs --annotation kubric/loc.json --image-root kubric --watch",
       {"format", "annotation", "image_root", "image_roots", "subsets", "limit", "keep_scores",
        "valse_all", "label", "watch", "scores_output", "watch_reconnects", "model",
        "model_version"},
       RunSubmit},
      {"eval watch", "ID",
       "Follow an evaluation until it ends (reconnects after dropped streams); exit 3 if it "
       "failed or was cancelled",
       "", {"scores_output", "watch_reconnects"}, RunWatch},
      {"eval get", "ID", "Show an evaluation's state and results", "", {}, RunGet},
      {"eval list", "", "List evaluations, newest first", "", {"state"}, RunList},
      {"eval cancel", "ID", "Cancel a queued or running evaluation", "", {}, RunCancel},
      {"eval scores", "ID", "Download an evaluation's per-sample score file (.npy)", "",
       {"output"}, RunScores},
      {"eval compare", "ID [ID...]",
       "Compare evaluations side by side: one row per subset (and overall), per job the "
       "samples and text / image / group % (VALSE: pairwise %)",
       "Columns are headed by model:version (label). --json prints the array of the "
       "evaluations (each as `eval get --json` does). Exit 3 if any job did not succeed "
       "(its columns show '-').\nExample: eqsim eval compare $(eqsim eval list --state "
       "succeeded --json | jq -r '.evaluations[:3][].id')",
       {}, RunCompare},
  };
}

}  // namespace eqsim::cli
