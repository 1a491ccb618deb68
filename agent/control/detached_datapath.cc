// DetachedDatapath: accepts desired state, serves none of it, and says so.
#include "agent/control/detached_datapath.h"

namespace xvio::control {
namespace {

v1::DatapathStatus NotAttached() {
  v1::DatapathStatus status;
  status.set_state(v1::DATAPATH_STATE_NOT_ATTACHED);
  status.set_message(DetachedDatapath::kNotAttachedMessage);
  return status;
}

}  // namespace

// Nothing to reject: no datapath limits apply while none is attached.
absl::Status DetachedDatapath::CheckUplinkChange(const UplinkChange&) const {
  return absl::OkStatus();
}
absl::Status DetachedDatapath::CheckPortChange(const PortChange&) const {
  return absl::OkStatus();
}
absl::Status DetachedDatapath::CheckFdbChange(const FdbChange&) const {
  return absl::OkStatus();
}

// Nothing to realise; each resource's status reports NOT_ATTACHED.
void DetachedDatapath::ApplyUplinkChange(const UplinkChange&) {}
void DetachedDatapath::ApplyPortChange(const PortChange&) {}
void DetachedDatapath::ApplyFdbChange(const FdbChange&) {}
void DetachedDatapath::Restore(const DesiredState&) {}

void DetachedDatapath::FillUplinkStatus(const v1::Uplink&, v1::UplinkStatus& status) const {
  *status.mutable_datapath() = NotAttached();
  status.set_xdp_mode(v1::XDP_MODE_UNSPECIFIED);
  status.set_bind_mode(v1::XSK_BIND_MODE_UNSPECIFIED);
  status.set_program_mode(v1::XDP_PROGRAM_MODE_UNSPECIFIED);
}

void DetachedDatapath::FillPortStatus(const v1::Port&, v1::PortStatus& status) const {
  *status.mutable_datapath() = NotAttached();
  status.set_frontend_connected(false);
  status.set_active_queue_pairs(0);
}

v1::DatapathInfo DetachedDatapath::Info() const {
  v1::DatapathInfo info;
  *info.mutable_status() = NotAttached();
  info.set_worker_count(0);
  return info;
}

std::vector<v1::FdbEntry> DetachedDatapath::LearnedFdbEntries() const {
  return {};
}

// No frames move, so the counters the store listed stay zero; there are no
// workers, and datapath_attached stays false so clients can tell.
void DetachedDatapath::CollectStats(v1::Stats& stats) const {
  stats.set_datapath_attached(false);
}

void DetachedDatapath::Shutdown(DatapathExitPolicy) {}

}  // namespace xvio::control
