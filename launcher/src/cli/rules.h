// Cross-option rules: what holds between options once all of them are read (conflicts such as
// -m with --no-python, --node-rank against --nnodes, --standalone, the static endpoint replacing
// --master-addr/--master-port, multi-node requirements), Slurm inference, and defaults taken
// from other environment variables. Pure apart from the uuid drawn for --standalone.
#pragma once

#include "cli/options.h"
#include "gpurun/common/env.h"

namespace gpurun::launcher {

// Applies the rules to `st.cfg` (reading `st.given` and `st.color_given`); adds notes, throws
// ConfigError for a combination gpurun refuses.
void apply_rules(ParseState& st, const EnvMap& env);

}  // namespace gpurun::launcher
