// The `eqsim` subcommands. Each takes its parsed arguments and returns the exit code
// (0 ok, 1 rpc error, 2 usage, 3 job failed or cancelled).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "client/cli/args.h"

namespace eqsim::cli {

struct Command {
  std::string name;      // "embed", "eval submit"
  std::string synopsis;  // positional arguments, e.g. "ID"
  std::string summary;   // one line
  std::string details;   // more help text (may be empty)
  std::vector<std::string> flags;  // accepted absl flags besides CommonFlags()
  std::function<int(const ParsedArgs&)> run;
};

const std::vector<Command>& AllCommands();

// Runs `eqsim <argv...>` (argv excluding the program name); what main() does.
int RunCli(const std::vector<std::string>& args);

// Registration hooks, one per source file.
std::vector<Command> BasicCommands();      // models, embed, score
std::vector<Command> HealthCommands();     // health
std::vector<Command> EvalCommands();       // eval submit|watch|get|list|cancel|scores|compare
std::vector<Command> EvalLocalCommands();  // eval-local
std::vector<Command> LoadtestCommands();   // loadtest

}  // namespace eqsim::cli
