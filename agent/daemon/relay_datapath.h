// The datapath xvio-agent runs: every uplink of the desired state becomes an
// UplinkRelay (XDP steering, AF_XDP sockets, worker threads), every port a
// vhost-user socket that the relay of the port's uplink serves. Uplinks whose
// interface is missing or whose attach failed are retried in the background.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agent/control/datapath.h"
#include "agent/relay/uplink_relay.h"
#include "agent/vhost/port.h"

namespace xvio::daemon {

struct RelayDatapathOptions {
  // bpffs directory; each uplink pins its maps in <bpf_pin_dir>/<uplink name>.
  std::filesystem::path bpf_pin_dir = "/sys/fs/bpf/xvio";
  // CPUs of the uplink workers. An uplink gets one worker per CPU here, at
  // most one per uplink queue (each worker owns some of the uplink's AF_XDP
  // sockets and guest transmit queues); uplinks start round-robin in this
  // list, in the order they are created (restored ones in name order), so a
  // single-queue uplink each lands on the next CPU. Empty: one unpinned
  // worker per uplink.
  std::vector<uint32_t> worker_cpus;
  // busy: workers never sleep; adaptive: they poll for adaptive_idle_poll
  // after the last frame, then sleep until notified; interrupt: they sleep
  // as soon as a round finds no work.
  v1::PollMode poll_mode = v1::POLL_MODE_ADAPTIVE;
  std::chrono::microseconds adaptive_idle_poll{200};
  // Uplinks that are not attached: a missing interface is looked for every
  // retry_interval; a failed attach is retried after retry_interval, and
  // after twice as long after each further failure, up to
  // max_retry_interval. A spec change, or a new interface under the name,
  // starts again at once from retry_interval. (Attached uplinks are checked
  // every retry_interval for their interface disappearing.)
  std::chrono::milliseconds retry_interval{1000};
  std::chrono::milliseconds max_retry_interval{30000};
  // What the destructor does when Shutdown() was not called.
  control::DatapathExitPolicy exit_policy_on_destroy = control::DatapathExitPolicy::kDetach;
};

class RelayDatapath final : public control::Datapath {
 public:
  explicit RelayDatapath(RelayDatapathOptions options);
  // Shuts down with options.exit_policy_on_destroy unless Shutdown() already ran.
  ~RelayDatapath() override;
  RelayDatapath(const RelayDatapath&) = delete;
  RelayDatapath& operator=(const RelayDatapath&) = delete;

  absl::Status CheckUplinkChange(const control::UplinkChange& change) const override;
  absl::Status CheckPortChange(const control::PortChange& change) const override;
  absl::Status CheckFdbChange(const control::FdbChange& change) const override;
  void ApplyUplinkChange(const control::UplinkChange& change) override;
  void ApplyPortChange(const control::PortChange& change) override;
  void ApplyFdbChange(const control::FdbChange& change) override;
  void Restore(const control::DesiredState& state) override;
  void FillUplinkStatus(const v1::Uplink& uplink, v1::UplinkStatus& status) const override;
  void FillPortStatus(const v1::Port& port, v1::PortStatus& status) const override;
  v1::DatapathInfo Info() const override;
  std::vector<v1::FdbEntry> LearnedFdbEntries() const override;
  void CollectStats(v1::Stats& stats) const override;
  void Shutdown(control::DatapathExitPolicy policy) override;

 private:
  // Which relay a port's control thread wakes when its rings change; cleared
  // (under the mutex) before that relay goes away.
  struct WakeTarget {
    std::mutex mutex;
    relay::UplinkRelay* relay = nullptr;
  };
  struct UplinkState {
    v1::Uplink uplink;                          // the normalised desired spec
    std::unique_ptr<relay::UplinkRelay> relay;  // null while not attached
    uint32_t first_cpu = 0;                     // index into worker_cpus of its first worker
    uint32_t queue_count = 0;                   // AF_XDP sockets bound
    uint32_t worker_count = 0;                  // the relay's worker threads
    unsigned ifindex = 0;                       // of the interface the relay attached to
    std::string error;                          // why relay is null (the last attempt)
    bool interface_missing = false;
    // Backoff of failed attaches (the interface exists; RelayDatapathOptions).
    uint32_t failed_attempts = 0;  // in a row, since the last success or spec change
    std::chrono::milliseconds retry_delay{0};
    std::chrono::steady_clock::time_point next_attempt{};
    unsigned failed_ifindex = 0;  // the interface those attempts failed on
  };
  struct StaticEntry {
    v1::FdbEntry entry;
    bool applied = false;  // in the relay of the entry's port
  };
  struct PortState {
    v1::Port port;
    std::unique_ptr<vhost::VhostUserPort> vhost;  // null when the socket could not be made
    std::shared_ptr<WakeTarget> wake = std::make_shared<WakeTarget>();
    bool served = false;  // added to the relay of port.spec().uplink()
    std::string error;    // why the port is not served
  };

  void AddUplinkLocked(const v1::Uplink& uplink);
  void RemoveUplinkLocked(const std::string& name);
  // Creates and starts the uplink's relay, then serves its ports; on failure
  // records why in the uplink's state (the retry thread tries again).
  void AttachLocked(UplinkState& state);
  // The relay's options for the uplink's spec, with `queue_count` sockets.
  std::pair<relay::UplinkRelayOptions, relay::SwitchingOptions> RelayOptionsLocked(
      const UplinkState& state, uint32_t queue_count) const;
  // Applies an update of an attached uplink's spec to its relay in place
  // (RelayLiveSettings); false when a field changed that needs a new relay
  // (`reason` says which) or the relay refused the settings.
  bool UpdateInPlaceLocked(UplinkState& state, const v1::Uplink& updated, std::string& reason);
  // Stops serving the uplink's ports and destroys its relay.
  void DetachLocked(UplinkState& state);
  void AddPortLocked(const v1::Port& port);
  void RemovePortLocked(const std::string& name);
  // Adds the port to its uplink's relay when both exist.
  void ServePortLocked(PortState& state);
  void UnservePortLocked(PortState& state);
  void RetryLoop();
  // Puts a static entry into the relay of its port, when that port is served.
  void ApplyStaticEntryLocked(StaticEntry& entry);
  // Runs `action` with the relay serving `port_name` (nothing if none does).
  void RelayFor(const std::string& port_name,
                const std::function<void(relay::UplinkRelay&, PortState&)>& action);
  // The number (WorkerStats.worker) of the uplink's first worker: workers
  // are numbered across attached uplinks in uplink name order.
  uint32_t FirstWorkerNumberLocked(const std::string& uplink) const;
  static std::pair<uint32_t, std::string> FdbKeyOf(const v1::FdbEntry& entry) {
    return {entry.vlan(), entry.mac()};
  }

  const RelayDatapathOptions options_;
  mutable std::mutex mutex_;  // guards everything below
  std::map<std::string, UplinkState> uplinks_;
  std::map<std::string, PortState> ports_;
  // Static FDB entries of the API by (VLAN, MAC).
  std::map<std::pair<uint32_t, std::string>, StaticEntry> static_fdb_;
  uint32_t next_worker_ = 0;  // round-robin index into worker_cpus of the next uplink
  bool shut_down_ = false;
  // Read by the relays' destructors (see UplinkRelayOptions::keep_attached_on_destroy).
  std::atomic<bool> keep_attached_{false};
  std::condition_variable retry_wakeup_;
  std::thread retry_thread_;
};

}  // namespace xvio::daemon
