// RAII owner of a dlopen()ed shared library. Used for the optional driver libraries the launcher
// never links against (libnvidia-ml, libcudart, libnccl, libcuda): a missing library is a normal
// outcome (open() returns an empty handle and the reason), never a crash.
#pragma once

#include <dlfcn.h>

#include <initializer_list>
#include <string>
#include <utility>

namespace gpurun::launcher {

class DlHandle {
 public:
  DlHandle() = default;
  DlHandle(const DlHandle&) = delete;
  DlHandle& operator=(const DlHandle&) = delete;
  DlHandle(DlHandle&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), name_(std::move(other.name_)) {}
  DlHandle& operator=(DlHandle&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
      name_ = std::move(other.name_);
    }
    return *this;
  }
  ~DlHandle() { reset(); }

  // Tries each soname in order (RTLD_NOW | RTLD_LOCAL). On failure returns an empty handle and
  // stores dlerror()'s text of the first attempt in *why (when non-null).
  static DlHandle open(std::initializer_list<const char*> sonames, std::string* why = nullptr) {
    std::string first_error;
    for (const char* soname : sonames) {
      if (void* h = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL)) {
        DlHandle d;
        d.handle_ = h;
        d.name_ = soname;
        return d;
      }
      const char* err = ::dlerror();
      if (first_error.empty()) first_error = err ? err : std::string(soname) + ": not found";
    }
    if (why) *why = first_error;
    return DlHandle();
  }

  explicit operator bool() const { return handle_ != nullptr; }
  const std::string& name() const { return name_; }

  // The symbol as a function pointer of type Fn, or nullptr.
  template <typename Fn>
  Fn symbol(const char* name) const {
    if (!handle_) return nullptr;
    return reinterpret_cast<Fn>(::dlsym(handle_, name));
  }

 private:
  void reset() {
    if (handle_) ::dlclose(handle_);
    handle_ = nullptr;
  }
  void* handle_ = nullptr;
  std::string name_;
};

}  // namespace gpurun::launcher
