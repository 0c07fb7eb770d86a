// Slurm's hostlist syntax, expanded: "gpu[01-04,07],login1" -> gpu01 gpu02 gpu03 gpu04 gpu07
// login1; "n[001-003]-ib" keeps the suffix and the zero padding; several bracket groups in one
// name give every combination ("r[1-2]n[1-2]" -> r1n1 r1n2 r2n1 r2n2), as scontrol show hostnames
// does. Used to find a job's first node (the rendezvous host) from SLURM_JOB_NODELIST.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace gpurun {

// Throws ConfigError naming `what` (e.g. "SLURM_JOB_NODELIST") and the problem (an unclosed
// bracket, a range that runs backwards, an empty list).
std::vector<std::string> expand_hostlist(std::string_view list, std::string_view what = "hostlist");

}  // namespace gpurun
