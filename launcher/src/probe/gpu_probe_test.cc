#include "probe/gpu_probe.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace gpurun;
using namespace gpurun::launcher;

namespace {

const std::string kU0 = "GPU-11111111-aaaa-bbbb-cccc-000000000000";
const std::string kU1 = "GPU-22222222-aaaa-bbbb-cccc-000000000001";
const std::string kU2 = "GPU-23333333-aaaa-bbbb-cccc-000000000002";
const std::string kU3 = "GPU-44444444-aaaa-bbbb-cccc-000000000003";
const std::string kMig0 = "MIG-aaaaaaaa-0000-5000-8000-000000000000";
const std::string kMig1 = "MIG-bbbbbbbb-0000-5000-8000-000000000001";

std::vector<NvmlDevice> four_gpus() {
  return {{kU0, "NVIDIA A100", {}, "0000:17:00.0", {}},
          {kU1, "NVIDIA A100", {}, "0000:3b:00.0", {}},
          {kU2, "NVIDIA A100", {}, "0000:86:00.0", {}},
          {kU3, "NVIDIA A100", {kMig0, kMig1}, "0000:af:00.0", {}}};
}

std::vector<std::string> ids(const VisibleSelection& s) {
  std::vector<std::string> out;
  for (const auto& g : s.gpus) out.push_back(g.id);
  return out;
}

VisibleSelection sel(const std::optional<std::string>& cvd) {
  return select_visible_nvidia(four_gpus(), cvd);
}

bool any_note_contains(const std::vector<std::string>& notes, const std::string& text) {
  for (const auto& n : notes) {
    if (n.find(text) != std::string::npos) return true;
  }
  return false;
}

using Ids = std::vector<std::string>;

}  // namespace

TEST_CASE("unset CUDA_VISIBLE_DEVICES: every GPU in NVML order", "[gpu_probe]") {
  auto s = sel(std::nullopt);
  CHECK(ids(s) == Ids{"0", "1", "2", "3"});
  CHECK(s.gpus[2].index == 2);
  CHECK(s.gpus[2].uuid == kU2);
  CHECK(s.gpus[2].name == "NVIDIA A100");
  CHECK(s.gpus[2].vendor == "nvidia");
  CHECK(any_note_contains(s.notes, "GPU 3 is in MIG mode"));
}

TEST_CASE("indices select and renumber", "[gpu_probe]") {
  auto s = sel(std::string("2,0"));
  CHECK(ids(s) == Ids{"2", "0"});
  CHECK(s.gpus[0].index == 0);
  CHECK(s.gpus[0].uuid == kU2);
  CHECK(s.gpus[1].uuid == kU0);
  CHECK(s.notes.empty());
  CHECK(ids(sel(std::string(" 1 , 3 "))) == Ids{"1", "3"});
}

TEST_CASE("empty, -1 and NoDevFiles mean no GPU", "[gpu_probe]") {
  for (const char* v : {"", "  ", "-1", "NoDevFiles"}) {
    INFO(v);
    auto s = sel(std::string(v));
    CHECK(s.gpus.empty());
    CHECK_FALSE(s.notes.empty());
  }
}

TEST_CASE("the list ends at the first invalid entry, as CUDA does", "[gpu_probe]") {
  auto s = sel(std::string("0,1,-1,2"));
  CHECK(ids(s) == Ids{"0", "1"});
  CHECK(any_note_contains(s.notes, "entry '-1'"));
  s = sel(std::string("1,7,2"));
  CHECK(ids(s) == Ids{"1"});
  CHECK(any_note_contains(s.notes, "entry '7' is out of range (4 GPUs installed)"));
  s = sel(std::string("1,1"));
  CHECK(ids(s) == Ids{"1"});
  CHECK(any_note_contains(s.notes, "repeats a GPU"));
  s = sel(std::string("0,bogus"));
  CHECK(ids(s) == Ids{"0"});
  CHECK(any_note_contains(s.notes, "not an index"));
  s = sel(std::string("99999999999999999999"));
  CHECK(s.gpus.empty());
}

TEST_CASE("GPU UUIDs, full or unique prefix", "[gpu_probe]") {
  auto s = sel(kU1 + "," + kU0);
  CHECK(ids(s) == Ids{kU1, kU0});
  CHECK(s.gpus[0].uuid == kU1);
  s = sel(std::string("GPU-4444"));
  REQUIRE(s.gpus.size() == 1);
  CHECK(s.gpus[0].id == "GPU-4444");
  CHECK(s.gpus[0].uuid == kU3);
  s = sel(std::string("GPU-2"));  // two GPUs start with GPU-2
  CHECK(s.gpus.empty());
  CHECK(any_note_contains(s.notes, "ambiguous"));
  s = sel(std::string("GPU-deadbeef"));
  CHECK(s.gpus.empty());
  CHECK(any_note_contains(s.notes, "names no installed GPU"));
  s = sel(kU0 + ",0");  // the same GPU twice through two spellings
  CHECK(ids(s) == Ids{kU0});
}

TEST_CASE("MIG instances by MIG UUID and by the old MIG-GPU syntax", "[gpu_probe]") {
  auto s = sel(kMig1 + "," + kMig0);
  REQUIRE(s.gpus.size() == 2);
  CHECK(s.gpus[0].id == kMig1);
  CHECK(s.gpus[0].uuid == kMig1);
  CHECK(s.gpus[0].name == "NVIDIA A100 (MIG)");
  s = sel(std::string("MIG-aaaa"));
  REQUIRE(s.gpus.size() == 1);
  CHECK(s.gpus[0].uuid == kMig0);
  s = sel(std::string("MIG-cccc"));
  CHECK(s.gpus.empty());
  CHECK(any_note_contains(s.notes, "names no MIG instance"));
  s = sel("MIG-" + kU3 + "/1/0");
  REQUIRE(s.gpus.size() == 1);
  CHECK(s.gpus[0].id == "MIG-" + kU3 + "/1/0");
}

TEST_CASE("NvmlGpuProbe: inventory, source, driver, notes", "[gpu_probe]") {
  NvmlGpuProbe probe(make_fake_nvml(four_gpus(), "550.54"));
  auto inv = probe.probe({});
  CHECK(inv.gpus.size() == 4);
  CHECK(inv.source == "nvml");
  CHECK(inv.driver_version == "550.54");
  inv = probe.probe({{"CUDA_VISIBLE_DEVICES", "3,1"}});
  CHECK(inv.gpus.size() == 2);
  CHECK(inv.gpus[0].id == "3");
  CHECK(any_note_contains(inv.notes, "selects 2 of 4 GPUs"));
}

TEST_CASE("NVML absent: 0 GPUs with a note, also when CUDA_VISIBLE_DEVICES is set", "[gpu_probe]") {
  NvmlGpuProbe probe(make_missing_nvml("libnvidia-ml.so.1: cannot open shared object file"));
  auto inv = probe.probe({});
  CHECK(inv.gpus.empty());
  CHECK(inv.source == "none");
  CHECK(any_note_contains(inv.notes, "NVML not loadable (libnvidia-ml.so.1: cannot open"));
  inv = probe.probe({{"CUDA_VISIBLE_DEVICES", "0,1"}});
  CHECK(inv.gpus.empty());
  CHECK(any_note_contains(inv.notes, "CUDA_VISIBLE_DEVICES=0,1 is set, but NVML is not loadable"));
}

TEST_CASE("mixed GPU models warn about CUDA_DEVICE_ORDER", "[gpu_probe]") {
  auto devices = four_gpus();
  devices[1].name = "NVIDIA T4";
  NvmlGpuProbe probe(make_fake_nvml(devices));
  CHECK(any_note_contains(probe.probe({}).notes, "CUDA_DEVICE_ORDER=PCI_BUS_ID"));
  CHECK_FALSE(any_note_contains(probe.probe({{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}}).notes,
                                "CUDA_DEVICE_ORDER"));
}

TEST_CASE("FakeGpuProbe and GPURUN_FAKE_GPUS", "[gpu_probe]") {
  auto inv = FakeGpuProbe(3).probe({});
  CHECK(inv.gpus.size() == 3);
  CHECK(inv.source == "fake");
  CHECK(inv.gpus[1].name == "Fake GPU");
  CHECK(inv.gpus[1].uuid != inv.gpus[0].uuid);
  CHECK(inv.notes.size() == 1);  // only the "tests only" note: fakes are one model
  CHECK(inv.gpus[1].vendor == "fake");
  inv = FakeGpuProbe(4).probe({{"CUDA_VISIBLE_DEVICES", "2,3"}});
  REQUIRE(inv.gpus.size() == 2);
  CHECK(inv.gpus[0].id == "2");

  auto def = make_default_gpu_probe();
  inv = def->probe({{"GPURUN_FAKE_GPUS", "2"}});
  CHECK(inv.gpus.size() == 2);
  CHECK(inv.source == "fake");
  CHECK(def->probe({{"GPURUN_FAKE_GPUS", "0"}}).gpus.empty());
  CHECK_THROWS_AS(def->probe({{"GPURUN_FAKE_GPUS", "many"}}), ConfigError);
}

TEST_CASE("the real probe never throws without a driver", "[gpu_probe]") {
  // On a machine without NVIDIA/AMD drivers this is 0 GPUs plus notes; with a driver, real GPUs.
  auto inv = make_default_gpu_probe()->probe({});
  if (inv.gpus.empty()) {
    CHECK(inv.source == "none");
    CHECK_FALSE(inv.notes.empty());
  } else {
    CHECK((inv.source == "nvml" || inv.source == "kfd"));
    for (const auto& g : inv.gpus) CHECK_FALSE(g.id.empty());
  }
  // Loaded once: a second call gives the same answer.
  CHECK(make_default_gpu_probe()->probe({}).gpus.size() == inv.gpus.size());
}

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "gpurun_kfd_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  void node(int n, int simd, unsigned long long unique_id, const std::string& name) {
    auto dir = path / std::to_string(n);
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "properties") << "cpu_cores_count 0\nsimd_count " << simd << "\nunique_id "
                                      << unique_id << "\ngpu_id " << 1000 + n << "\n";
    std::ofstream(dir / "name") << name << "\n";
  }
};

}  // namespace

TEST_CASE("AMD: KFD topology, ROCR then HIP visible devices", "[gpu_probe]") {
  TempDir t;
  t.node(0, 0, 0, "");  // the CPU node
  t.node(1, 304, 0x1234, "gfx90a");
  t.node(2, 304, 0x5678, "gfx90a");
  t.node(10, 304, 0x9abc, "gfx942");  // numeric, not lexical, order
  auto all = read_kfd_topology(t.path.string());
  REQUIRE(all.size() == 3);
  CHECK(all[0].node == 1);
  CHECK(all[2].node == 10);
  CHECK(all[0].uuid == "GPU-0000000000001234");
  CHECK(all[2].name == "gfx942");

  AmdGpuProbe probe(t.path.string());
  auto inv = probe.probe({});
  CHECK(inv.source == "kfd");
  REQUIRE(inv.gpus.size() == 3);
  CHECK(inv.gpus[2].name == "AMD gfx942");
  CHECK(inv.gpus[2].vendor == "amd");

  inv = probe.probe({{"ROCR_VISIBLE_DEVICES", "2,GPU-0000000000001234"}});
  REQUIRE(inv.gpus.size() == 2);
  CHECK(inv.gpus[0].id == "2");  // physical index: safe for a narrowed ROCR_VISIBLE_DEVICES
  CHECK(inv.gpus[1].id == "0");

  inv = probe.probe({{"ROCR_VISIBLE_DEVICES", "1,2"}, {"HIP_VISIBLE_DEVICES", "1"}});
  REQUIRE(inv.gpus.size() == 1);
  CHECK(inv.gpus[0].id == "2");
  CHECK(inv.gpus[0].index == 0);

  inv = probe.probe({{"CUDA_VISIBLE_DEVICES", "0,5"}});
  CHECK(inv.gpus.size() == 1);
  CHECK(any_note_contains(inv.notes, "entry '5'"));
  CHECK(probe.probe({{"HIP_VISIBLE_DEVICES", ""}}).gpus.empty());

  auto none = AmdGpuProbe((t.path / "missing").string()).probe({});
  CHECK(none.gpus.empty());
  CHECK(any_note_contains(none.notes, "no AMD GPU"));
}
