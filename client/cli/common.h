// Shared pieces of the `eqsim` subcommands: the connection flags every subcommand takes,
// error reporting with exit codes, output helpers and the stderr progress bar.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/client.h"
#include "eqsim/v1/similarity.pb.h"

namespace eqsim::cli {

// Connection / output flags accepted by every subcommand (underscore names).
const std::vector<std::string>& CommonFlags();
// Model selection flags (--model, --model-version).
const std::vector<std::string>& ModelFlags();

// ClientOptions from the common flags (targets from --target, else $EQSIM_TARGET, else
// localhost:8500; the token from --token-file, else $EQSIM_TOKEN_FILE).
absl::StatusOr<ClientOptions> ClientOptionsFromFlags();
absl::StatusOr<std::unique_ptr<Client>> MakeClient();
ModelSelector ModelFromFlags();
bool JsonOutput();

// Prints "eqsim <command>: error: <status>" to stderr and returns `code`.
int Fail(const std::string& command, const absl::Status& status, int code);
// Exit code for an error from the client library: 1 (rpc) for server/transport errors,
// 2 (usage) for errors about the caller's own input found before any RPC.
int ExitCodeFor(const absl::Status& status, bool local_input);

// Proto -> JSON (snake_case field names, defaults printed).
std::string ToJson(const google::protobuf::Message& message);

// "winoground", "eqben-pairs", ... (dashes or underscores, any case) -> the proto enum.
absl::StatusOr<v1::BenchmarkFormat> ParseFormat(const std::string& name);
std::string FormatName(v1::BenchmarkFormat format);
// "queued" / "RUNNING" ... -> JobState.
absl::StatusOr<v1::JobState> ParseJobState(const std::string& name);
std::string StateName(v1::JobState state);

// Human-readable evaluation: state, progress, timings and the per-subset table.
std::string DescribeEvaluation(const v1::Evaluation& ev, bool with_results);

// A progress bar on stderr: redrawn in place on a terminal, a line every `line_every`
// otherwise (logs). Disabled entirely by --noprogress.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  ~ProgressBar();
  // `suffix` is printed after the numbers ("312.5 samples/s, 3 errors").
  void Update(int64_t done, int64_t total, const std::string& suffix = "");
  // Ends the line (terminal); idempotent.
  void Finish();
  // Prints a message on its own line without garbling the bar.
  void Note(const std::string& message);

 private:
  std::string label_;
  bool enabled_;
  bool tty_;
  bool drawn_ = false;
  absl::Time start_;
  absl::Time last_draw_ = absl::InfinitePast();
  absl::Duration line_every_ = absl::Seconds(10);
};

}  // namespace eqsim::cli
