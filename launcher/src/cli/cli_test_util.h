// Helpers for the cli tests: resolve_config with an empty environment by default, and the
// ConfigError message it throws.
#pragma once

#include <string>
#include <vector>

#include "cli/config.h"
#include "gpurun/common/env.h"
#include "gpurun/common/error.h"

namespace gpurun::launcher::testing {

using Args = std::vector<std::string>;

inline LaunchConfig parse(const Args& args, const EnvMap& env = {}) {
  return resolve_config(args, env);
}

inline std::string error_of(const Args& args, const EnvMap& env = {}) {
  try {
    resolve_config(args, env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace gpurun::launcher::testing
