#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"

namespace eqsim::cli {

const std::vector<Command>& AllCommands() {
  static const auto* all = [] {
    auto* v = new std::vector<Command>();
    for (auto part : {BasicCommands(), HealthCommands(), EvalCommands(), EvalLocalCommands(),
                      LoadtestCommands()})
      v->insert(v->end(), part.begin(), part.end());
    return v;
  }();
  return *all;
}

namespace {

void PrintOverview(FILE* out) {
  std::fprintf(out,
               "eqsim: client of eqsim-server (image-text similarity serving and EqBen "
               "evaluation)\n\nusage: eqsim <command> [flags] [args]\n\ncommands:\n");
  for (const Command& c : AllCommands())
    std::fprintf(out, "  %-14s %s\n", c.name.c_str(), c.summary.c_str());
  std::fprintf(out,
               "\n`eqsim <command> --help` lists the command's flags.\n"
               "Exit codes: 0 ok, 1 rpc error, 2 usage error, 3 evaluation failed or "
               "cancelled.\n");
}

std::vector<std::string> FlagsOf(const Command& c) {
  std::vector<std::string> flags = c.flags;
  flags.insert(flags.end(), CommonFlags().begin(), CommonFlags().end());
  return flags;
}

void PrintCommandHelp(const Command& c) {
  std::printf("usage: eqsim %s [flags]%s%s\n\n%s\n", c.name.c_str(), c.synopsis.empty() ? "" : " ",
              c.synopsis.c_str(), c.summary.c_str());
  if (!c.details.empty()) std::printf("\n%s\n", c.details.c_str());
  std::printf("\nflags:\n%s", FlagsHelp(c.flags).c_str());
  std::printf("\nconnection and output flags:\n%s", FlagsHelp(CommonFlags()).c_str());
}

}  // namespace

int RunCli(const std::vector<std::string>& args) {
  if (args.empty()) {
    PrintOverview(stderr);
    return kExitUsage;
  }
  if (args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    if (args.size() > 1) return RunCli({args[1], args.size() > 2 ? args[2] : "--help", "--help"});
    PrintOverview(stdout);
    return kExitOk;
  }
  // Longest command name matching the first one or two words.
  const Command* cmd = nullptr;
  size_t words = 0;
  for (const Command& c : AllCommands()) {
    if (args.size() >= 2 && c.name == args[0] + " " + args[1]) {
      cmd = &c;
      words = 2;
      break;
    }
  }
  if (cmd == nullptr) {
    for (const Command& c : AllCommands()) {
      if (c.name == args[0]) {
        cmd = &c;
        words = 1;
        break;
      }
    }
  }
  if (cmd == nullptr) {
    std::vector<std::string> subs;
    for (const Command& c : AllCommands())
      if (c.name.rfind(args[0] + " ", 0) == 0) subs.push_back(c.name.substr(args[0].size() + 1));
    if (!subs.empty()) {
      if (args.size() >= 2 && (args[1] == "--help" || args[1] == "-h")) {
        std::printf("usage: eqsim %s <%s> [flags]\n", args[0].c_str(),
                    absl::StrJoin(subs, "|").c_str());
        return kExitOk;
      }
      std::fprintf(stderr, "eqsim %s: expected a subcommand: %s%s\n", args[0].c_str(),
                   absl::StrJoin(subs, ", ").c_str(),
                   args.size() >= 2 ? absl::StrCat(" (got '", args[1], "')").c_str() : "");
      return kExitUsage;
    }
    std::fprintf(stderr, "eqsim: unknown command '%s'\n\n", args[0].c_str());
    PrintOverview(stderr);
    return kExitUsage;
  }
  std::vector<std::string> rest(args.begin() + words, args.end());
  auto parsed = ParseArgs(rest, FlagsOf(*cmd), cmd->name);
  if (!parsed.ok()) {
    std::fprintf(stderr, "eqsim %s: %s\n", cmd->name.c_str(),
                 std::string(parsed.status().message()).c_str());
    return kExitUsage;
  }
  if (parsed->help) {
    PrintCommandHelp(*cmd);
    return kExitOk;
  }
  return cmd->run(*parsed);
}

}  // namespace eqsim::cli
