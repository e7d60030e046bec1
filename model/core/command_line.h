// Command-line parsing shared by the eqsim programs (eqsim-server, eqsim-train, eqsim-eval).
//
// The documented flag spelling is kebab-case (--model-repository); Abseil names flags in
// snake_case (model_repository). Both are accepted: dashes in a flag's name (between the
// leading "--" and any "=") become underscores. Values are never touched, and nothing after a
// bare "--" is rewritten.
#ifndef EQSIM_MODEL_CORE_COMMAND_LINE_H_
#define EQSIM_MODEL_CORE_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace eqsim {

// argv[0] is kept as is; see the header comment for the rule.
std::vector<std::string> NormalizeFlagNames(std::vector<std::string> args);

// Sets the program's usage message, makes --help list only the flags defined in files whose
// path contains `main_file` (e.g. "eqsim_server_main"), normalises flag names and parses them
// with Abseil. --help (and --helpfull, --version, ...) prints and exits 0; an unknown or
// malformed flag prints the error and exits 1. Returns the positional arguments, argv[0] first.
std::vector<std::string> ParseProgramFlags(int argc, char** argv, absl::string_view usage,
                                           absl::string_view main_file);

}  // namespace eqsim

#endif  // EQSIM_MODEL_CORE_COMMAND_LINE_H_
