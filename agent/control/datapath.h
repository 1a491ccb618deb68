// The datapath as the control plane sees it. xvio-agent's RelayDatapath (XDP
// steering, AF_XDP sockets, vhost-user ports and workers; agent/daemon)
// implements this interface; the state store calls it for every change of
// desired state and asks it for status and counters. DetachedDatapath serves
// nothing and says so in every status (the control plane without a datapath).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "xvio/v1/agent.pb.h"
#include "xvio/v1/fdb.pb.h"
#include "xvio/v1/port.pb.h"
#include "xvio/v1/stats.pb.h"
#include "xvio/v1/uplink.pb.h"

namespace xvio::control {

// One change of desired state. `before` is null for a create, `after` is null
// for a delete; both are set for an update. Specs are normalised (defaults
// filled in, see validation.h).
template <typename Resource>
struct Change {
  const Resource* before = nullptr;
  const Resource* after = nullptr;
};
using UplinkChange = Change<v1::Uplink>;
using PortChange = Change<v1::Port>;
using FdbChange = Change<v1::FdbEntry>;

// The whole desired state, as loaded from the state directory on start.
struct DesiredState {
  std::vector<v1::Uplink> uplinks;
  std::vector<v1::Port> ports;
  std::vector<v1::FdbEntry> static_fdb_entries;
};

// What the datapath does with its XDP programs and pinned maps when the agent
// exits cleanly.
enum class DatapathExitPolicy {
  // Leave XDP programs attached and maps pinned, so a restarted agent adopts
  // them and steering continues meanwhile (frames for ports are dropped while
  // no agent relays them).
  kKeep,
  // Detach XDP programs and remove the pins: the uplinks return to plain
  // kernel networking.
  kDetach,
};

// Thread-safety: Check*/Apply*/Restore are called one at a time, in commit
// order, with the store's write lock held (so they must not call back into the
// store). The status and stats queries may run concurrently with each other
// and with one Apply*, from gRPC threads.
class Datapath {
 public:
  virtual ~Datapath() = default;

  // Phase one of a change: reject what the datapath cannot do (e.g. more
  // queue pairs than it supports) with a status the API returns as is
  // (FAILED_PRECONDITION, INVALID_ARGUMENT, RESOURCE_EXHAUSTED...). No side
  // effects: the change may still fail to persist afterwards.
  virtual absl::Status CheckUplinkChange(const UplinkChange& change) const = 0;
  virtual absl::Status CheckPortChange(const PortChange& change) const = 0;
  virtual absl::Status CheckFdbChange(const FdbChange& change) const = 0;

  // Phase two: the change is persisted; realise it. Work that can fail later
  // (an interface that is missing, a front-end that does not connect) shows
  // in the resource's status, and the datapath keeps retrying.
  virtual void ApplyUplinkChange(const UplinkChange& change) = 0;
  virtual void ApplyPortChange(const PortChange& change) = 0;
  virtual void ApplyFdbChange(const FdbChange& change) = 0;

  // Once on start, before the API serves: the persisted desired state. This
  // is where the datapath adopts the maps it pinned under bpffs instead of
  // tearing down what a previous agent left running.
  virtual void Restore(const DesiredState& state) = 0;

  // Datapath-owned status fields of one resource (state, modes in use,
  // front-end connection). Interface presence is filled by the control plane.
  virtual void FillUplinkStatus(const v1::Uplink& uplink, v1::UplinkStatus& status) const = 0;
  virtual void FillPortStatus(const v1::Port& port, v1::PortStatus& status) const = 0;
  virtual v1::DatapathInfo Info() const = 0;
  virtual std::vector<v1::FdbEntry> LearnedFdbEntries() const = 0;

  // Fills the counters of `stats`: ports and uplinks arrive listed by name
  // (the selection the client asked for); the datapath sets their totals and
  // per-queue counters, adds its workers and sets datapath_attached.
  virtual void CollectStats(v1::Stats& stats) const = 0;

  // Clean shutdown: stop workers, drain ports, and keep or detach XDP
  // programs and pins as the policy says.
  virtual void Shutdown(DatapathExitPolicy policy) = 0;
};

}  // namespace xvio::control
