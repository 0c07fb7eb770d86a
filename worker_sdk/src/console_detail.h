// Internals of console.cc that unit tests check directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace gpurun::worker::detail {

// JSON string literal (with quotes) for `s`.
std::string json_quote(std::string_view s);

// torchrun's error-file JSON for `message`.
std::string error_file_json(std::string_view message, std::string_view traceback,
                            std::int64_t timestamp_s);

// "train: 45% 450/1000 it [00:12<00:15, 36.2 it/s] loss=0.31"
std::string format_progress(std::string_view label, std::uint64_t count, std::uint64_t total,
                            std::string_view unit, std::chrono::duration<double> elapsed,
                            std::string_view postfix);

}  // namespace gpurun::worker::detail
