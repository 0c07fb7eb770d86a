// The launcher's entry point for a job (main calls it for a run and --dry-run): one node, or this
// node's part of a multi-node job. What it needs from the outside is passed in, so the whole
// orchestration runs in unit tests with a fake GPU probe and a fake process runner.
#pragma once

#include <functional>
#include <memory>

#include "cli/config.h"
#include "process/process_runner.h"

namespace gpurun::launcher {

// How a node's job starts processes: one runner per job (per round, elastic), made after the log
// tree exists because its watchdog must know what to clean up if gpurun is killed.
// main: make_posix_process_runner; tests: a FakeProcessRunner.
using ProcessRunnerFactory =
    std::function<std::unique_ptr<ProcessRunner>(const ReaperOptions& reaper)>;

// Runs the job described by cfg; returns the process exit code (worker's code, 128+signal, ...,
// or torchrun's 1 under --exit-code-mode torchrun). The GPUs are probed once, here.
int run(const LaunchConfig& cfg, const EnvMap& env, GpuProbe& probe,
        const ProcessRunnerFactory& make_runner);

}  // namespace gpurun::launcher
