// TORCHELASTIC_ERROR_FILE, the JSON a worker's @record (torch.distributed.elastic) writes when it
// fails: read and parsed; a corrupt or missing file is reported in `problem`, never thrown.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace gpurun::launcher {

// TORCHELASTIC_ERROR_FILE as written by torch.distributed.elastic's @record.
struct ErrorFile {
  std::string path;
  bool present = false;
  std::string problem;    // "unreadable: ..." for a corrupt file ("" when fine or absent)
  std::string message;    // message.message (or the string message)
  std::string traceback;  // message.extraInfo.py_callstack
  std::optional<long long> timestamp;  // epoch seconds
  nlohmann::json raw;                  // the parsed document when valid
};

ErrorFile read_error_file(const std::string& path);
ErrorFile parse_error_file(const std::string& path, const std::string& content);

}  // namespace gpurun::launcher
