#include "output/error_file.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

namespace gpurun::launcher {

ErrorFile parse_error_file(const std::string& path, const std::string& content) {
  ErrorFile ef;
  ef.path = path;
  ef.present = true;
  try {
    nlohmann::json doc = nlohmann::json::parse(content);
    if (!doc.is_object() || !doc.contains("message")) {
      ef.problem = "unreadable: no \"message\" field";
      return ef;
    }
    const auto& m = doc["message"];
    auto to_epoch = [](const nlohmann::json& v) -> std::optional<long long> {
      if (v.is_number_integer()) return v.get<long long>();
      if (v.is_number()) return static_cast<long long>(v.get<double>());
      if (v.is_string()) {
        try {
          return std::stoll(v.get<std::string>());
        } catch (const std::exception&) {
          return std::nullopt;
        }
      }
      return std::nullopt;
    };
    if (m.is_string()) {
      ef.message = m.get<std::string>();
      if (doc.contains("timestamp")) ef.timestamp = to_epoch(doc["timestamp"]);
    } else if (m.is_object()) {
      if (m.contains("message") && m["message"].is_string()) ef.message = m["message"];
      if (m.contains("extraInfo") && m["extraInfo"].is_object()) {
        const auto& extra = m["extraInfo"];
        if (extra.contains("py_callstack") && extra["py_callstack"].is_string()) {
          ef.traceback = extra["py_callstack"];
        }
        if (extra.contains("timestamp")) ef.timestamp = to_epoch(extra["timestamp"]);
      }
    } else {
      ef.problem = "unreadable: \"message\" is neither a string nor an object";
      return ef;
    }
    ef.raw = std::move(doc);
  } catch (const nlohmann::json::exception& e) {
    ef.problem = fmt::format("unreadable: not valid JSON ({})", e.what());
  }
  return ef;
}

ErrorFile read_error_file(const std::string& path) {
  ErrorFile ef;
  ef.path = path;
  if (path.empty()) return ef;
  std::ifstream f(path, std::ios::binary);
  if (!f) return ef;  // the worker did not write one (no @record)
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_error_file(path, ss.str());
}

}  // namespace gpurun::launcher
