// The xvio.v1 gRPC service implementations (see api_services.h).
#include "agent/control/api_services.h"

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "api/status_code_name.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"
#include "xvio/v1/agent.grpc.pb.h"
#include "xvio/v1/fdb.grpc.pb.h"
#include "xvio/v1/port.grpc.pb.h"
#include "xvio/v1/stats.grpc.pb.h"
#include "xvio/v1/uplink.grpc.pb.h"

namespace xvio::control {
namespace {

// absl and gRPC share the canonical code numbering.
grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok())
    return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// Runs one handler body, counts it, and logs changes (info) and rejected
// requests (debug: a client's mistake is not the agent's problem).
// `subject` names the resource a change is about (empty for reads).
template <typename Body>
grpc::Status Handle(ApiServices::Shared& shared, const char* method, const std::string& subject,
                    bool mutating, Body body) {
  grpc::Status status = ToGrpc(body());
  const std::string code = api::StatusCodeName(status.error_code());
  shared.control_plane.requests().Record(method, code);
  if (status.ok() && mutating) {
    spdlog::info("api {} {}: ok", method, subject);
  } else if (!status.ok()) {
    spdlog::debug("api {} {}: {}: {}", method, subject, code, status.error_message());
  }
  return status;
}

template <typename Result, typename Message>
absl::Status Assign(absl::StatusOr<Result> result, Message* response) {
  if (!result.ok())
    return result.status();
  *response = std::move(*result);
  return absl::OkStatus();
}

class UplinkService final : public v1::UplinkService::Service {
 public:
  explicit UplinkService(ApiServices::Shared& shared) : shared_(shared) {}

  grpc::Status CreateUplink(grpc::ServerContext*, const v1::CreateUplinkRequest* request,
                            v1::Uplink* response) override {
    return Handle(shared_, "xvio.v1.UplinkService/CreateUplink", request->uplink().name(), true,
                  [&] { return Assign(store().CreateUplink(request->uplink()), response); });
  }
  grpc::Status UpdateUplink(grpc::ServerContext*, const v1::UpdateUplinkRequest* request,
                            v1::Uplink* response) override {
    return Handle(
        shared_, "xvio.v1.UplinkService/UpdateUplink", request->uplink().name(), true, [&] {
          return Assign(store().UpdateUplink(request->uplink(), request->expected_generation()),
                        response);
        });
  }
  grpc::Status DeleteUplink(grpc::ServerContext*, const v1::DeleteUplinkRequest* request,
                            google::protobuf::Empty*) override {
    return Handle(shared_, "xvio.v1.UplinkService/DeleteUplink", request->name(), true,
                  [&] { return store().DeleteUplink(request->name(), request->allow_missing()); });
  }
  grpc::Status GetUplink(grpc::ServerContext*, const v1::GetUplinkRequest* request,
                         v1::Uplink* response) override {
    return Handle(shared_, "xvio.v1.UplinkService/GetUplink", request->name(), false,
                  [&] { return Assign(store().GetUplink(request->name()), response); });
  }
  grpc::Status ListUplinks(grpc::ServerContext*, const v1::ListUplinksRequest* request,
                           v1::ListUplinksResponse* response) override {
    return Handle(shared_, "xvio.v1.UplinkService/ListUplinks", std::string(), false, [&] {
      return Assign(store().ListUplinks(request->page_size(), request->page_token()), response);
    });
  }

 private:
  StateStore& store() { return shared_.control_plane.store(); }
  ApiServices::Shared& shared_;
};

class PortService final : public v1::PortService::Service {
 public:
  explicit PortService(ApiServices::Shared& shared) : shared_(shared) {}

  grpc::Status CreatePort(grpc::ServerContext*, const v1::CreatePortRequest* request,
                          v1::Port* response) override {
    return Handle(shared_, "xvio.v1.PortService/CreatePort", request->port().name(), true,
                  [&] { return Assign(store().CreatePort(request->port()), response); });
  }
  grpc::Status UpdatePort(grpc::ServerContext*, const v1::UpdatePortRequest* request,
                          v1::Port* response) override {
    return Handle(shared_, "xvio.v1.PortService/UpdatePort", request->port().name(), true, [&] {
      return Assign(store().UpdatePort(request->port(), request->expected_generation()), response);
    });
  }
  grpc::Status DeletePort(grpc::ServerContext*, const v1::DeletePortRequest* request,
                          google::protobuf::Empty*) override {
    return Handle(shared_, "xvio.v1.PortService/DeletePort", request->name(), true,
                  [&] { return store().DeletePort(request->name(), request->allow_missing()); });
  }
  grpc::Status GetPort(grpc::ServerContext*, const v1::GetPortRequest* request,
                       v1::Port* response) override {
    return Handle(shared_, "xvio.v1.PortService/GetPort", request->name(), false,
                  [&] { return Assign(store().GetPort(request->name()), response); });
  }
  grpc::Status ListPorts(grpc::ServerContext*, const v1::ListPortsRequest* request,
                         v1::ListPortsResponse* response) override {
    return Handle(shared_, "xvio.v1.PortService/ListPorts", std::string(), false, [&] {
      return Assign(store().ListPorts(request->page_size(), request->page_token()), response);
    });
  }

 private:
  StateStore& store() { return shared_.control_plane.store(); }
  ApiServices::Shared& shared_;
};

class FdbService final : public v1::FdbService::Service {
 public:
  explicit FdbService(ApiServices::Shared& shared) : shared_(shared) {}

  grpc::Status CreateFdbEntry(grpc::ServerContext*, const v1::CreateFdbEntryRequest* request,
                              v1::FdbEntry* response) override {
    return Handle(shared_, "xvio.v1.FdbService/CreateFdbEntry", request->entry().mac(), true,
                  [&] { return Assign(store().CreateFdbEntry(request->entry()), response); });
  }
  grpc::Status DeleteFdbEntry(grpc::ServerContext*, const v1::DeleteFdbEntryRequest* request,
                              google::protobuf::Empty*) override {
    return Handle(shared_, "xvio.v1.FdbService/DeleteFdbEntry", request->mac(), true, [&] {
      return store().DeleteFdbEntry(request->mac(), request->vlan(), request->allow_missing());
    });
  }
  grpc::Status GetFdbEntry(grpc::ServerContext*, const v1::GetFdbEntryRequest* request,
                           v1::FdbEntry* response) override {
    return Handle(shared_, "xvio.v1.FdbService/GetFdbEntry", request->mac(), false, [&] {
      return Assign(store().GetFdbEntry(request->mac(), request->vlan()), response);
    });
  }
  grpc::Status ListFdbEntries(grpc::ServerContext*, const v1::ListFdbEntriesRequest* request,
                              v1::ListFdbEntriesResponse* response) override {
    return Handle(shared_, "xvio.v1.FdbService/ListFdbEntries", std::string(), false,
                  [&] { return Assign(store().ListFdbEntries(*request), response); });
  }

 private:
  StateStore& store() { return shared_.control_plane.store(); }
  ApiServices::Shared& shared_;
};

class AgentService final : public v1::AgentService::Service {
 public:
  explicit AgentService(ApiServices::Shared& shared) : shared_(shared) {}

  grpc::Status GetAgentInfo(grpc::ServerContext*, const v1::GetAgentInfoRequest*,
                            v1::AgentInfo* response) override {
    return Handle(shared_, "xvio.v1.AgentService/GetAgentInfo", std::string(), false, [&] {
      *response = shared_.control_plane.AgentInfo();
      return absl::OkStatus();
    });
  }

 private:
  ApiServices::Shared& shared_;
};

class StatsService final : public v1::StatsService::Service {
 public:
  static constexpr uint32_t kDefaultIntervalMs = 1000;
  static constexpr uint32_t kMinIntervalMs = 100;
  static constexpr uint32_t kMaxIntervalMs = 3'600'000;

  explicit StatsService(ApiServices::Shared& shared) : shared_(shared) {}

  grpc::Status GetStats(grpc::ServerContext*, const v1::GetStatsRequest* request,
                        v1::Stats* response) override {
    return Handle(shared_, "xvio.v1.StatsService/GetStats", std::string(), false,
                  [&] { return Assign(shared_.control_plane.Stats(*request), response); });
  }

  grpc::Status WatchStats(grpc::ServerContext* context, const v1::WatchStatsRequest* request,
                          grpc::ServerWriter<v1::Stats>* writer) override {
    return Handle(shared_, "xvio.v1.StatsService/WatchStats", std::string(), false,
                  [&]() -> absl::Status {
                    uint32_t interval_ms =
                        request->interval_ms() == 0 ? kDefaultIntervalMs : request->interval_ms();
                    if (interval_ms < kMinIntervalMs || interval_ms > kMaxIntervalMs) {
                      return absl::InvalidArgumentError(absl::StrCat(
                          "interval_ms: ", request->interval_ms(), " is out of range; use ",
                          kMinIntervalMs, "-", kMaxIntervalMs, ", or 0 for ", kDefaultIntervalMs));
                    }
                    const auto interval = std::chrono::milliseconds(interval_ms);
                    // Cancellation is not signalled to sync handlers, so the wait wakes at
                    // least this often to notice a client that went away.
                    const auto cancel_check = std::chrono::milliseconds(100);
                    while (true) {
                      auto stats = shared_.control_plane.Stats(request->selector());
                      if (!stats.ok())
                        return stats.status();
                      if (!writer->Write(*stats))
                        return absl::OkStatus();  // the client is gone
                      const auto next = std::chrono::steady_clock::now() + interval;
                      std::unique_lock lock(shared_.mutex);
                      while (!shared_.stopped && !context->IsCancelled() &&
                             std::chrono::steady_clock::now() < next) {
                        shared_.stopped_changed.wait_until(
                            lock, std::min(next, std::chrono::steady_clock::now() + cancel_check));
                      }
                      if (shared_.stopped) {
                        return absl::UnavailableError("the agent is shutting down");
                      }
                      if (context->IsCancelled())
                        return absl::CancelledError("the client cancelled the watch");
                    }
                  });
  }

 private:
  ApiServices::Shared& shared_;
};

}  // namespace

ApiServices::ApiServices(ControlPlane& control_plane) : shared_{control_plane, {}, {}, false} {
  services_.push_back(std::make_unique<UplinkService>(shared_));
  services_.push_back(std::make_unique<PortService>(shared_));
  services_.push_back(std::make_unique<FdbService>(shared_));
  services_.push_back(std::make_unique<AgentService>(shared_));
  services_.push_back(std::make_unique<StatsService>(shared_));
}

ApiServices::~ApiServices() {
  StopStreams();
}

std::vector<grpc::Service*> ApiServices::services() {
  std::vector<grpc::Service*> result;
  for (auto& service : services_)
    result.push_back(service.get());
  return result;
}

void ApiServices::StopStreams() {
  {
    std::lock_guard lock(shared_.mutex);
    shared_.stopped = true;
  }
  shared_.stopped_changed.notify_all();
}

}  // namespace xvio::control
