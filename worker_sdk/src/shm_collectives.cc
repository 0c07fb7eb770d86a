#include "shm_collectives.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <fstream>
#include <random>
#include <stdexcept>

#include "gpurun/common/duration.h"
#include "gpurun/common/unique_fd.h"

namespace gpurun::worker::detail {

// One per rank, on its own cache line. Accessed only through std::atomic_ref: the segment is
// plain shared memory, zero-filled by the kernel.
// The descriptors share the line with `seq`: a waiting rank that sees the arrival has the
// descriptor in cache already, so the check costs no extra cache-line transfer.
struct ShmCollectives::Header {
  std::uint32_t seq;       // the last chunk this rank has written and published
  std::uint32_t sleepers;  // ranks futex-waiting on `seq`
  std::int32_t pid;        // for the liveness check
  std::uint32_t unused;    //
  CollectiveDesc desc[2];  // this rank's current collective, by the parity of its first chunk
};
static_assert(sizeof(std::uint32_t) == sizeof(std::int32_t));
static_assert(16 + 2 * sizeof(CollectiveDesc) == 64, "one cache line per rank");

namespace {

constexpr std::size_t kPage = 4096;
constexpr auto kSpin = std::chrono::microseconds(50);            // busy-wait before sleeping
constexpr auto kSleepSlice = std::chrono::milliseconds(20);      // futex sleep between checks
constexpr std::size_t kMaxSegmentBytes = std::size_t{32} << 20;  // /dev/shm is 64 MB in Docker

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

// 256 KiB per slot (measured best: 2 ranks x 2 sets stay in L2; 1 MiB slots moved 4.5 GB/s
// instead of 8 and cost more to map), smaller from 64 ranks so the segment fits kMaxSegmentBytes.
std::size_t slot_bytes_for(int size) {
  const std::size_t fit = kMaxSegmentBytes / (2 * static_cast<std::size_t>(size));
  return std::clamp(fit / kPage * kPage, std::size_t{64} << 10, std::size_t{256} << 10);
}

std::string boot_id() {
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string s;
  std::getline(f, s);
  return s;
}

bool arrived(std::uint32_t seq, std::uint32_t g) {
  return static_cast<std::int32_t>(seq - g) >= 0;  // wrap-safe seq >= g
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Process-shared futex (the segment is mapped by several processes: no FUTEX_PRIVATE_FLAG).
void futex_wait(std::uint32_t* addr, std::uint32_t expected, std::chrono::nanoseconds slice) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(slice.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(slice.count() % 1'000'000'000);
  ::syscall(SYS_futex, addr, FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake_all(std::uint32_t* addr) {
  ::syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

bool process_gone(std::int32_t pid) { return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH; }

}  // namespace

std::unique_ptr<ShmCollectives> ShmCollectives::create(int rank, int size, rendezvous::Store& store,
                                                       bool enabled,
                                                       const std::function<int(int)>& agree,
                                                       std::string* why) {
  const std::size_t slot = slot_bytes_for(size);
  const std::size_t headers = round_up(sizeof(Header) * static_cast<std::size_t>(size), kPage);
  const std::size_t length = headers + 2 * static_cast<std::size_t>(size) * slot;
  const std::string boot = boot_id();
  std::string name;
  std::string local_why;
  void* base = nullptr;
  try {
    UniqueFd fd;
    if (!enabled) {
      local_why = "disabled by GPURUN_SHM=0";
      // Rank 0 still publishes (an empty name), so that the others do not wait for it.
      if (rank == 0) store.set("shm", boot + "\n");
    } else if (rank == 0) {
      std::random_device rd;
      name = fmt::format("/gpurun-{}-{:08x}{:08x}", ::getpid(), rd(), rd());
      fd.reset(::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600));
      if (!fd) {
        local_why = fmt::format("shm_open {}: {}", name, std::strerror(errno));
      } else if (int e = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(length)); e != 0) {
        local_why =
            fmt::format("/dev/shm has no room for {} KiB ({})", length >> 10, std::strerror(e));
        fd.reset();
      }
      // Published even on failure, so that the others do not wait for it.
      store.set("shm", boot + "\n" + (fd ? name : std::string()));
    } else {
      const std::string v = rendezvous::to_string(store.get("shm"));
      const auto nl = v.find('\n');
      const std::string their_boot = v.substr(0, nl);
      const std::string their_name = nl == std::string::npos ? "" : v.substr(nl + 1);
      if (their_name.empty()) {
        local_why = "rank 0 did not create the segment";
      } else if (their_boot != boot || boot.empty()) {
        local_why = "rank 0 runs on another host";
      } else {
        fd.reset(::shm_open(their_name.c_str(), O_RDWR, 0));
        if (!fd) {
          local_why = fmt::format("shm_open {}: {} (another IPC namespace?)", their_name,
                                  std::strerror(errno));
        }
      }
    }
    if (fd) {
      // MAP_POPULATE: fault the whole segment in now, not one page per first touch later.
      void* p =
          ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
      if (p == MAP_FAILED) {
        local_why = fmt::format("mmap of {} KiB: {}", length >> 10, std::strerror(errno));
      } else {
        base = p;
        auto* h = reinterpret_cast<Header*>(static_cast<std::uint8_t*>(base) +
                                            sizeof(Header) * static_cast<std::size_t>(rank));
        std::atomic_ref<std::int32_t>(h->pid).store(static_cast<std::int32_t>(::getpid()));
      }
    }
  } catch (const std::exception& e) {
    local_why = e.what();
  }
  // Every rank reaches this point whatever happened above: all use the segment or none does.
  // The vote: 1 mapped, 0 could not map, -1 disabled (the minimum says why when nobody maps).
  const int all_ok = agree(!enabled ? -1 : (base != nullptr ? 1 : 0));
  if (rank == 0 && !name.empty()) ::shm_unlink(name.c_str());  // mapped everywhere by now
  if (all_ok <= 0) {
    if (base != nullptr) ::munmap(base, length);
    if (why != nullptr) {
      if (!local_why.empty() && (enabled || all_ok < 0)) {
        *why = local_why;
      } else if (all_ok < 0) {
        *why = "disabled by GPURUN_SHM=0 on another rank";
      } else {
        *why = "another rank could not map it";
      }
    }
    return nullptr;
  }
  std::unique_ptr<ShmCollectives> shm(new ShmCollectives(rank, size, base, length, slot));
  // The exit check needs the peers' PIDs to mean something here (same PID namespace).
  shm->check_pids_ = true;
  for (int r = 0; r < size; ++r) {
    const std::int32_t pid = std::atomic_ref<std::int32_t>(shm->header(r).pid).load();
    if (pid <= 0 || (::kill(pid, 0) != 0 && errno != EPERM)) shm->check_pids_ = false;
  }
  return shm;
}

ShmCollectives::ShmCollectives(int rank, int size, void* base, std::size_t length,
                               std::size_t slot_bytes)
    : rank_(rank), size_(size), base_(base), length_(length), slot_bytes_(slot_bytes) {}

ShmCollectives::~ShmCollectives() { ::munmap(base_, length_); }

ShmCollectives::Header& ShmCollectives::header(int r) const {
  return reinterpret_cast<Header*>(base_)[r];
}

std::uint8_t* ShmCollectives::slot(std::uint32_t parity, int r) const {
  const std::size_t headers = round_up(sizeof(Header) * static_cast<std::size_t>(size_), kPage);
  const std::size_t index = static_cast<std::size_t>(parity) * static_cast<std::size_t>(size_) +
                            static_cast<std::size_t>(r);
  return static_cast<std::uint8_t*>(base_) + headers + index * slot_bytes_;
}

void ShmCollectives::arrive(std::uint32_t g) {
  Header& h = header(rank_);
  std::atomic_ref<std::uint32_t>(h.seq).store(g, std::memory_order_seq_cst);
  if (std::atomic_ref<std::uint32_t>(h.sleepers).load(std::memory_order_seq_cst) != 0) {
    futex_wake_all(&h.seq);
  }
}

void ShmCollectives::wait_for_all(std::uint32_t g, std::chrono::steady_clock::time_point deadline,
                                  std::size_t chunk, std::size_t chunks, const char* op) {
  using Clock = std::chrono::steady_clock;
  auto where = [&] {
    return chunks > 1 ? fmt::format(" (chunk {} of {})", chunk + 1, chunks) : std::string();
  };
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    Header& h = header(r);
    std::atomic_ref<std::uint32_t> seq(h.seq);
    if (arrived(seq.load(std::memory_order_acquire), g)) continue;
    const auto spin_until = Clock::now() + kSpin;
    for (int i = 0; !arrived(seq.load(std::memory_order_acquire), g); ++i) {
      cpu_relax();
      if ((i & 63) == 63 && Clock::now() > spin_until) break;
    }
    std::atomic_ref<std::uint32_t> sleepers(h.sleepers);
    while (true) {
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      const std::uint32_t v = seq.load(std::memory_order_seq_cst);
      if (!arrived(v, g)) futex_wait(&h.seq, v, kSleepSlice);
      sleepers.fetch_sub(1, std::memory_order_seq_cst);
      if (arrived(seq.load(std::memory_order_acquire), g)) break;
      const std::int32_t pid = std::atomic_ref<std::int32_t>(h.pid).load();
      if (check_pids_ && process_gone(pid)) {
        throw ShmPeerExited(fmt::format(
            "rank {} (pid {}) exited while this rank waited for it in the shared-memory {}{}", r,
            pid, op, where()));
      }
      if (Clock::now() >= deadline) {
        std::vector<int> late;
        for (int q = 0; q < size_; ++q) {
          if (q != rank_ && !arrived(std::atomic_ref<std::uint32_t>(header(q).seq).load(), g)) {
            late.push_back(q);
          }
        }
        throw ShmPeerLate(fmt::format("rank{} {} did not arrive at the shared-memory {}{} in time",
                                      late.size() == 1 ? "" : "s", fmt::join(late, ","), op,
                                      where()));
      }
    }
  }
}

void ShmCollectives::check_descs(std::uint32_t parity, const NumberedDesc& mine) const {
  bool same = true;
  for (int r = 0; r < size_ && same; ++r) {
    same = std::memcmp(&header(r).desc[parity], &mine.desc, sizeof(CollectiveDesc)) == 0;
  }
  if (same) return;
  std::vector<NumberedDesc> all(static_cast<std::size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    all[static_cast<std::size_t>(r)] = {mine.seq, header(r).desc[parity]};
  }
  throw CollectiveMismatch(std::move(all));
}

template <typename Put, typename Take>
void ShmCollectives::chunked(std::size_t bytes, std::size_t step, std::chrono::milliseconds timeout,
                             const NumberedDesc& desc, Put&& put, Take&& take) {
  const auto deadline = deadline_after(timeout);
  const std::size_t chunks = bytes == 0 ? 1 : (bytes + step - 1) / step;
  const char* op = to_string(desc.desc.op);
  for (std::size_t k = 0; k < chunks; ++k) {
    const std::size_t off = k * step;
    const std::size_t n = std::min(step, bytes - off);
    const std::uint32_t g = ++seq_;
    const std::uint32_t parity = g & 1u;
    put(slot(parity, rank_), off, n);
    // Written right before the arrival that publishes it: the two stores share the header line,
    // so a peer spinning on `seq` pulls the line once (written before put(), the spinning peer
    // would take it away in between and cost a second transfer).
    if (k == 0) header(rank_).desc[parity] = desc.desc;
    arrive(g);
    wait_for_all(g, deadline, k, chunks, op);
    if (k == 0) check_descs(parity, desc);  // before anything is read
    take(parity, off, n);
  }
}

void ShmCollectives::all_reduce(std::uint8_t* data, std::size_t bytes, std::size_t elem_size,
                                ReduceKernel fn, std::chrono::milliseconds timeout,
                                const NumberedDesc& desc) {
  chunked(
      bytes, slot_bytes_ / elem_size * elem_size, timeout, desc,
      [&](std::uint8_t* mine, std::size_t off, std::size_t n) { std::memcpy(mine, data + off, n); },
      [&](std::uint32_t parity, std::size_t off, std::size_t n) {
        // Rank order on every rank: slot 0 op slot 1 op ... (this rank's input is its own slot).
        std::uint8_t* out = data + off;
        const std::size_t count = n / elem_size;
        fn(out, slot(parity, 0), slot(parity, 1), count);
        for (int r = 2; r < size_; ++r) fn(out, out, slot(parity, r), count);
      });
}

void ShmCollectives::all_gather(const std::uint8_t* send, std::uint8_t* recv, std::size_t bytes,
                                std::chrono::milliseconds timeout, const NumberedDesc& desc) {
  chunked(
      bytes, slot_bytes_, timeout, desc,
      [&](std::uint8_t* mine, std::size_t off, std::size_t n) {
        std::memmove(mine, send + off, n);
      },
      [&](std::uint32_t parity, std::size_t off, std::size_t n) {
        for (int r = 0; r < size_; ++r) {
          std::memcpy(recv + static_cast<std::size_t>(r) * bytes + off, slot(parity, r), n);
        }
      });
}

void ShmCollectives::broadcast(std::uint8_t* data, std::size_t bytes, int root,
                               std::chrono::milliseconds timeout, const NumberedDesc& desc) {
  chunked(
      bytes, slot_bytes_, timeout, desc,
      [&](std::uint8_t* mine, std::size_t off, std::size_t n) {
        if (rank_ == root) std::memcpy(mine, data + off, n);
      },
      [&](std::uint32_t parity, std::size_t off, std::size_t n) {
        if (rank_ != root) std::memcpy(data + off, slot(parity, root), n);
      });
}

void ShmCollectives::gather(const std::uint8_t* send, std::uint8_t* recv,
                            const std::vector<std::size_t>& counts, int root,
                            std::chrono::milliseconds timeout, const NumberedDesc& desc) {
  auto part = [](std::size_t count, std::size_t off, std::size_t n) {
    return count > off ? std::min(n, count - off) : std::size_t{0};
  };
  std::vector<std::size_t> displ(counts.size() + 1, 0);
  for (std::size_t r = 0; r < counts.size(); ++r) displ[r + 1] = displ[r] + counts[r];
  const auto me = static_cast<std::size_t>(rank_);
  chunked(
      *std::max_element(counts.begin(), counts.end()), slot_bytes_, timeout, desc,
      [&](std::uint8_t* mine, std::size_t off, std::size_t n) {
        // A rank that sends nothing may pass a null buffer: copy only what there is.
        const std::size_t k = part(counts[me], off, n);
        if (rank_ != root && k != 0) std::memcpy(mine, send + off, k);
      },
      [&](std::uint32_t parity, std::size_t off, std::size_t n) {
        if (rank_ != root) return;
        for (int r = 0; r < size_; ++r) {
          const auto q = static_cast<std::size_t>(r);
          const std::size_t k = part(counts[q], off, n);
          if (r != root && k != 0) std::memcpy(recv + displ[q] + off, slot(parity, r), k);
        }
      });
  // Root's own block last: after the descriptor check, so a mismatch leaves recv untouched.
  if (rank_ == root && counts[me] != 0 && send != recv + displ[me]) {
    std::memmove(recv + displ[me], send, counts[me]);
  }
}

void ShmCollectives::barrier(std::chrono::milliseconds timeout, const NumberedDesc& desc) {
  chunked(
      0, slot_bytes_, timeout, desc, [](std::uint8_t*, std::size_t, std::size_t) {},
      [](std::uint32_t, std::size_t, std::size_t) {});
}

}  // namespace gpurun::worker::detail
