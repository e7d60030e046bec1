// Per-subcommand command-line parsing for `eqsim` on top of absl flags: each subcommand
// accepts only its own flags (a flag of another subcommand is a usage error naming it),
// --flag-name and --flag_name are the same flag, repeated flags accumulate, and every error
// is a message instead of an exit, so the CLI can return exit code 2.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace eqsim::cli {

enum ExitCode { kExitOk = 0, kExitRpcError = 1, kExitUsage = 2, kExitJobFailed = 3 };

struct ParsedArgs {
  std::vector<std::string> positional;
  // Every occurrence, in command-line order: (flag name with underscores, value).
  std::vector<std::pair<std::string, std::string>> ordered;
  bool help = false;

  bool Has(const std::string& name) const;
  // All values given for `name`, in order (each occurrence as written, no comma split).
  std::vector<std::string> All(const std::string& name) const;
};

// Parses `args` (the words after the subcommand) accepting the absl flags named in
// `allowed` (underscore spelling) and sets them; allowed flags not given are reset to their
// defaults first. Values: --f=v, --f v; booleans --f,
// --nof, --f=true|false. std::vector<std::string> flags accumulate over repetitions (and
// still split on commas). "--" ends the flags. "-h"/"--help" sets `help`.
// `command` names the subcommand in messages.
absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<std::string>& allowed,
                                     const std::string& command);

// "  --name=<type>  help (default: x)" lines for the given flags.
std::string FlagsHelp(const std::vector<std::string>& names);

}  // namespace eqsim::cli
