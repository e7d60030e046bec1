// eqsim: command-line client of eqsim-server. See `eqsim --help`.
#include <string>
#include <vector>

#include "client/cli/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return eqsim::cli::RunCli(args);
}
