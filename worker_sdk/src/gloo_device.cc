#include "gloo_device.h"

#include <map>
#include <string>
#include <utility>

namespace gpurun::worker::detail {

// One Gloo TCP device per address for the whole process, as torch's ProcessGroupGloo shares its
// devices. Each device owns a transport thread that polls epoll every 10 ms and is joined when
// the device is destroyed: destroying it with the last communicator added up to 10 ms to every
// worker's exit (and one thread per communicator created). The cache is deliberately never
// destroyed: the threads end with the process.
SharedDevice shared_device(const ::gloo::transport::tcp::attr& attr) {
  static std::mutex mu;
  static auto* devices = new std::map<std::pair<std::string, std::string>, SharedDevice>();
  const std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*devices)[{attr.hostname, attr.iface}];
  if (!slot.device) {
    slot.device = ::gloo::transport::tcp::CreateDevice(attr);
    slot.kicker = LoopKicker::attach(slot.device);
  }
  return slot;
}

}  // namespace gpurun::worker::detail
