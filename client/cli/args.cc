#include "client/cli/args.h"

#include <algorithm>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/match.h"

namespace eqsim::cli {
namespace {

std::string Dashed(const std::string& name) { return absl::StrReplaceAll(name, {{"_", "-"}}); }

bool IsVectorFlag(const absl::CommandLineFlag& f) {
  return f.IsOfType<std::vector<std::string>>();
}

}  // namespace

bool ParsedArgs::Has(const std::string& name) const {
  return std::any_of(ordered.begin(), ordered.end(),
                     [&](const auto& kv) { return kv.first == name; });
}

std::vector<std::string> ParsedArgs::All(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& [n, v] : ordered)
    if (n == name) out.push_back(v);
  return out;
}

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<std::string>& allowed,
                                     const std::string& command) {
  ParsedArgs out;
  // Start from the defaults, so that running several commands in one process (tests, an
  // embedding program) never inherits a flag from the previous one.
  for (const std::string& name : allowed) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string ignored;
    if (flag != nullptr) flag->ParseFrom(flag->DefaultValue(), &ignored);
  }
  auto is_allowed = [&](const std::string& n) {
    return std::find(allowed.begin(), allowed.end(), n) != allowed.end();
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      out.positional.insert(out.positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help" || arg == "--helpfull") {
      out.help = true;
      continue;
    }
    if (arg.size() < 2 || arg[0] != '-' || arg == "-") {
      out.positional.push_back(arg);
      continue;
    }
    std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    std::string value;
    const size_t eq = body.find('=');
    const bool has_value = eq != std::string::npos;
    if (has_value) {
      value = body.substr(eq + 1);
      body = body.substr(0, eq);
    }
    std::string name = absl::StrReplaceAll(body, {{"-", "_"}});
    absl::CommandLineFlag* flag = is_allowed(name) ? absl::FindCommandLineFlag(name) : nullptr;
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no") && is_allowed(name.substr(2))) {
      absl::CommandLineFlag* f = absl::FindCommandLineFlag(name.substr(2));
      if (f != nullptr && f->IsOfType<bool>()) {
        flag = f;
        name = name.substr(2);
        negated = true;
      }
    }
    if (flag == nullptr) {
      if (absl::FindCommandLineFlag(name) != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", Dashed(name),
                                                       " does not apply to `eqsim ", command,
                                                       "` (see eqsim ", command, " --help)"));
      }
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", Dashed(name), " for `eqsim ",
                                                     command, "` (see eqsim ", command,
                                                     " --help)"));
    }
    if (flag->IsOfType<bool>()) {
      if (negated && has_value) {
        return absl::InvalidArgumentError(
            absl::StrCat("--no", Dashed(name), " takes no value, got '", value, "'"));
      }
      if (!has_value) value = negated ? "false" : "true";
    } else if (!has_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", Dashed(name), " needs a value"));
      }
      value = args[++i];
    }
    out.ordered.emplace_back(name, value);
  }
  // Apply: vector flags get all occurrences joined; scalars the last one.
  std::vector<std::string> done;
  for (const auto& [name, unused] : out.ordered) {
    if (std::find(done.begin(), done.end(), name) != done.end()) continue;
    done.push_back(name);
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::vector<std::string> values = out.All(name);
    const std::string v = IsVectorFlag(*flag) ? absl::StrJoin(values, ",") : values.back();
    std::string error;
    if (!flag->ParseFrom(v, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid value '", v, "' for --", Dashed(name), ": ", error));
    }
  }
  return out;
}

std::string FlagsHelp(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) {
    absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
    if (f == nullptr) continue;
    std::string type = f->IsOfType<bool>() ? "" : "=<value>";
    absl::StrAppend(&out, "  --", Dashed(name), type, "\n      ", f->Help());
    const std::string def = f->DefaultValue();
    if (!def.empty()) absl::StrAppend(&out, " (default: ", def, ")");
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace eqsim::cli
