// Helpers shared by the tests of tests/model.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

#include "gtest/gtest.h"

namespace eqsim::testing {

// A directory of this process alone (test binaries of several build trees may run at once),
// created on first use and removed at exit.
inline std::string ProcessTempDir() {
  static const std::string dir = [] {
    std::string d = ::testing::TempDir() + "/eqsim_model_test_" + std::to_string(::getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  static const struct Cleanup {
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup;
  return dir;
}

}  // namespace eqsim::testing
