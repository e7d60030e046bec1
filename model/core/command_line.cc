#include "model/core/command_line.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace eqsim {

std::vector<std::string> NormalizeFlagNames(std::vector<std::string> args) {
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--") break;
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) continue;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t k = 2; k < end; ++k) {
      if (a[k] == '-') a[k] = '_';
    }
  }
  return args;
}

std::vector<std::string> ParseProgramFlags(int argc, char** argv, absl::string_view usage,
                                           absl::string_view main_file) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  const std::string file(main_file);
  config.contains_help_flags = [file](absl::string_view f) { return absl::StrContains(f, file); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  std::vector<std::string> args = NormalizeFlagNames(std::vector<std::string>(argv, argv + argc));
  std::vector<char*> ptrs;
  for (auto& a : args) ptrs.push_back(a.data());
  ptrs.push_back(nullptr);
  // absl::ParseCommandLine exits with status 1 after printing --help; a help request is not a
  // failure, so usage flags are handled here and exit 0 (unknown flags still exit 1 with the
  // error). Uses absl's flags_internal API of Debian's Abseil 20220623, the version we pin.
  std::vector<char*> rest = absl::flags_internal::ParseCommandLineImpl(
      static_cast<int>(args.size()), ptrs.data(),
      absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
      absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
      absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  if (absl::flags_internal::HandleUsageFlags(std::cout, absl::ProgramUsageMessage()) != -1) {
    std::cout.flush();
    std::exit(0);
  }
  return std::vector<std::string>(rest.begin(), rest.end());
}

}  // namespace eqsim
