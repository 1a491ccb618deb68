// The control plane without a datapath (the in-process API tests use it): it
// accepts every change (the desired state is still validated and persisted by
// the store) and reports, in every status, that nothing serves it. Never a
// silent success: resources say DATAPATH_STATE_NOT_ATTACHED with the reason.
#pragma once

#include "agent/control/datapath.h"

namespace xvio::control {

class DetachedDatapath final : public Datapath {
 public:
  // The message every status carries.
  static constexpr const char* kNotAttachedMessage =
      "not attached: this control plane runs without a datapath; the desired state is stored and "
      "persisted, but no XDP program, AF_XDP socket or vhost-user socket exists";

  absl::Status CheckUplinkChange(const UplinkChange& change) const override;
  absl::Status CheckPortChange(const PortChange& change) const override;
  absl::Status CheckFdbChange(const FdbChange& change) const override;
  void ApplyUplinkChange(const UplinkChange& change) override;
  void ApplyPortChange(const PortChange& change) override;
  void ApplyFdbChange(const FdbChange& change) override;
  void Restore(const DesiredState& state) override;
  void FillUplinkStatus(const v1::Uplink& uplink, v1::UplinkStatus& status) const override;
  void FillPortStatus(const v1::Port& port, v1::PortStatus& status) const override;
  v1::DatapathInfo Info() const override;
  std::vector<v1::FdbEntry> LearnedFdbEntries() const override;
  void CollectStats(v1::Stats& stats) const override;
  void Shutdown(DatapathExitPolicy policy) override;
};

}  // namespace xvio::control
