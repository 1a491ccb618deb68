// xvioctl: the command-line client of the xvio.v1 gRPC API. Subcommands
// mirror the API (port, uplink, fdb, stats, health, version); output is a
// table by default or JSON with -o json. Exit codes: see connection.h.
#include <chrono>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "api/status_code_name.h"
#include "api/xvioctl/connection.h"
#include "api/xvioctl/render.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "xvio/v1/agent.grpc.pb.h"
#include "xvio/v1/fdb.grpc.pb.h"
#include "xvio/v1/port.grpc.pb.h"
#include "xvio/v1/stats.grpc.pb.h"
#include "xvio/v1/uplink.grpc.pb.h"

#ifndef XVIO_VERSION
#error "XVIO_VERSION must be defined by the build"
#endif

namespace xvio::ctl {
namespace {

constexpr const char* kExitCodesHelp =
    "Exit codes: 0 ok; 1 other failure (health: not SERVING); 2 usage error; 3 agent "
    "unreachable; 4 not found; 5 conflict (already exists / changed meanwhile); 6 request "
    "rejected (invalid argument / failed precondition); 7 not authenticated / permitted.";

struct GlobalOptions {
  ConnectionOptions connection;
  std::string output = "table";
  double timeout_seconds = 10;
};

// Thrown for command-line mistakes found after CLI11 parsing (e.g. a VLAN
// list that does not parse); reported with the subcommand's usage.
struct UsageError {
  std::string message;
};

class Client {
 public:
  explicit Client(const GlobalOptions& options) : options_(options) {}

  // Connects lazily so that usage errors never need an agent.
  std::shared_ptr<grpc::Channel> channel() {
    if (!channel_) {
      auto channel = Connect(options_.connection);
      if (!channel.ok())
        throw UsageError{std::string(channel.status().message())};
      channel_ = *channel;
    }
    return channel_;
  }
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_seconds * 1000)));
    return context;
  }
  bool json() const { return options_.output == "json"; }

 private:
  const GlobalOptions& options_;
  std::shared_ptr<grpc::Channel> channel_;
};

int Fail(const grpc::Status& status) {
  std::cerr << "xvioctl: " << api::StatusCodeName(status.error_code()) << ": "
            << status.error_message() << "\n";
  return ExitCodeFor(status);
}

// ---- flag parsing helpers ----

uint32_t ParseVlanId(const std::string& text, const char* flag) {
  uint32_t vlan = 0;
  if (!absl::SimpleAtoi(text, &vlan)) {
    throw UsageError{absl::StrCat(flag, ": \"", text, "\" is not a VLAN id")};
  }
  return vlan;
}

// "10-20,30" -> ranges; the agent checks the bounds.
std::vector<v1::VlanRange> ParseVlanRanges(const std::string& text) {
  std::vector<v1::VlanRange> ranges;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<std::string> bounds = absl::StrSplit(part, '-');
    v1::VlanRange range;
    if (bounds.size() == 1) {
      range.set_first(ParseVlanId(bounds[0], "--trunk"));
      range.set_last(range.first());
    } else if (bounds.size() == 2) {
      range.set_first(ParseVlanId(bounds[0], "--trunk"));
      range.set_last(ParseVlanId(bounds[1], "--trunk"));
    } else {
      throw UsageError{absl::StrCat("--trunk: \"", part, "\" is not a VLAN or range like 10-20")};
    }
    ranges.push_back(range);
  }
  if (ranges.empty())
    throw UsageError{"--trunk: give VLANs like \"10-20,30\""};
  return ranges;
}

template <typename Enum>
Enum ParseEnum(const google::protobuf::EnumDescriptor* type, const std::string& text,
               const char* flag) {
  for (int i = 0; i < type->value_count(); ++i) {
    const int number = type->value(i)->number();
    if (number != 0 && ShortEnumName(type, number) == text)
      return static_cast<Enum>(number);
  }
  std::vector<std::string> names;
  for (int i = 0; i < type->value_count(); ++i) {
    if (type->value(i)->number() != 0)
      names.push_back(ShortEnumName(type, type->value(i)->number()));
  }
  throw UsageError{
      absl::StrCat(flag, ": \"", text, "\" is not one of ", absl::StrJoin(names, ", "))};
}

// ---- ports ----

struct PortFlags {
  std::string name;
  std::string socket;
  std::string mode;
  std::vector<std::string> macs;
  uint32_t access_vlan = 0;
  std::string trunk;
  uint32_t native_vlan = 0;
  bool untagged = false;
  uint32_t queue_pairs = 0;
  std::string offload;
  bool hash_report = false;
  bool no_hash_report = false;
  uint32_t mtu = 0;
  std::string uplink;
  bool allow_missing = false;
  uint64_t expected_generation = 0;
  int32_t page_size = 0;
  CLI::App* command = nullptr;
};

void AddPortSpecFlags(CLI::App* command, PortFlags& flags, bool update) {
  command->add_option("--socket", flags.socket,
                      "vhost-user socket: absolute path, or file name in the agent's socket dir");
  command->add_option("--mode", flags.mode, "vhost-user role of the agent: server or client");
  command->add_option("--mac", flags.macs, "MAC address of the VM NIC; repeatable");
  auto* access = command->add_option("--access-vlan", flags.access_vlan, "Access VLAN 1-4094");
  auto* trunk = command->add_option("--trunk", flags.trunk, "Trunk VLANs, e.g. \"10-20,30\"");
  command->add_option("--native-vlan", flags.native_vlan, "Native (untagged) VLAN of a trunk")
      ->needs(trunk);
  access->excludes(trunk);
  if (update) {
    command->add_flag("--untagged", flags.untagged, "Carry untagged frames only (clear VLANs)")
        ->excludes(access)
        ->excludes(trunk);
    command->add_flag("--no-hash-report", flags.no_hash_report, "Stop offering HASH_REPORT");
    command->add_option("--expected-generation", flags.expected_generation,
                        "Fail unless the port is at this generation");
  }
  command->add_option("--queue-pairs", flags.queue_pairs, "virtio-net queue pairs 1-64");
  command->add_option("--offload", flags.offload, "Offload policy: full, checksum-only or none");
  command->add_flag("--hash-report", flags.hash_report, "Offer VIRTIO_NET_F_HASH_REPORT");
  command->add_option("--mtu", flags.mtu, "MTU 68-9000");
  command->add_option("--uplink", flags.uplink, "Uplink for frames no local port takes");
}

// Applies the flags the user gave onto `spec` (all of them for create).
void ApplyPortFlags(const PortFlags& flags, v1::PortSpec& spec) {
  auto given = [&](const char* flag) { return flags.command->count(flag) > 0; };
  if (given("--socket"))
    spec.mutable_vhost_user()->set_socket_path(flags.socket);
  if (given("--mode")) {
    spec.mutable_vhost_user()->set_mode(
        ParseEnum<v1::VhostUserMode>(v1::VhostUserMode_descriptor(), flags.mode, "--mode"));
  }
  if (given("--mac")) {
    spec.clear_macs();
    for (const auto& mac : flags.macs)
      spec.add_macs(mac);
  }
  if (given("--access-vlan"))
    spec.set_access_vlan(flags.access_vlan);
  if (given("--trunk")) {
    v1::VlanTrunk& trunk = *spec.mutable_trunk();
    trunk.clear_allowed();
    for (const auto& range : ParseVlanRanges(flags.trunk))
      *trunk.add_allowed() = range;
    trunk.set_native_vlan(flags.native_vlan);
  }
  if (flags.untagged)
    spec.clear_vlan();
  if (given("--queue-pairs"))
    spec.set_queue_pairs(flags.queue_pairs);
  if (given("--offload")) {
    spec.set_offload_policy(
        ParseEnum<v1::OffloadPolicy>(v1::OffloadPolicy_descriptor(), flags.offload, "--offload"));
  }
  if (flags.hash_report)
    spec.set_hash_report(true);
  if (flags.no_hash_report)
    spec.set_hash_report(false);
  if (given("--mtu"))
    spec.set_mtu(flags.mtu);
  if (given("--uplink"))
    spec.set_uplink(flags.uplink);
}

int PrintPort(Client& client, const v1::Port& port) {
  std::cout << (client.json() ? Json(port) : PortDetails(port));
  return kExitOk;
}

void AddPortCommands(CLI::App& app, Client& client, std::function<int()>& action) {
  CLI::App* port = app.add_subcommand("port", "Ports: vhost-user sockets of VM NICs");
  port->require_subcommand(1);
  auto flags = std::make_shared<PortFlags>();

  CLI::App* create = port->add_subcommand("create", "Create a port (idempotent)");
  create->add_option("name", flags->name, "Port name")->required();
  AddPortSpecFlags(create, *flags, false);
  create->get_option("--socket")->required();
  create->callback([&client, &action, flags, create] {
    action = [&client, flags, create] {
      flags->command = create;
      v1::CreatePortRequest request;
      request.mutable_port()->set_name(flags->name);
      ApplyPortFlags(*flags, *request.mutable_port()->mutable_spec());
      v1::Port response;
      auto status = v1::PortService::NewStub(client.channel())
                        ->CreatePort(client.Context().get(), request, &response);
      return status.ok() ? PrintPort(client, response) : Fail(status);
    };
  });

  CLI::App* update = port->add_subcommand(
      "update", "Change the given settings of a port (others keep their values)");
  update->add_option("name", flags->name, "Port name")->required();
  AddPortSpecFlags(update, *flags, true);
  update->callback([&client, &action, flags, update] {
    action = [&client, flags, update] {
      flags->command = update;
      auto stub = v1::PortService::NewStub(client.channel());
      v1::GetPortRequest get;
      get.set_name(flags->name);
      v1::Port current;
      auto status = stub->GetPort(client.Context().get(), get, &current);
      if (!status.ok())
        return Fail(status);
      v1::UpdatePortRequest request;
      request.mutable_port()->set_name(flags->name);
      *request.mutable_port()->mutable_spec() = current.spec();
      ApplyPortFlags(*flags, *request.mutable_port()->mutable_spec());
      // Read-modify-write: refuse to overwrite a change made in between.
      request.set_expected_generation(flags->expected_generation != 0
                                          ? flags->expected_generation
                                          : current.meta().generation());
      v1::Port response;
      status = stub->UpdatePort(client.Context().get(), request, &response);
      return status.ok() ? PrintPort(client, response) : Fail(status);
    };
  });

  CLI::App* remove = port->add_subcommand("delete", "Delete a port and its static FDB entries");
  remove->add_option("name", flags->name, "Port name")->required();
  remove->add_flag("--allow-missing", flags->allow_missing, "Succeed if it does not exist");
  remove->callback([&client, &action, flags] {
    action = [&client, flags] {
      v1::DeletePortRequest request;
      request.set_name(flags->name);
      request.set_allow_missing(flags->allow_missing);
      google::protobuf::Empty response;
      auto status = v1::PortService::NewStub(client.channel())
                        ->DeletePort(client.Context().get(), request, &response);
      if (!status.ok())
        return Fail(status);
      std::cout << (client.json() ? std::string("{}\n")
                                  : absl::StrCat("port ", flags->name, " deleted\n"));
      return int{kExitOk};
    };
  });

  CLI::App* get = port->add_subcommand("get", "Show one port with its status");
  get->add_option("name", flags->name, "Port name")->required();
  get->callback([&client, &action, flags] {
    action = [&client, flags] {
      v1::GetPortRequest request;
      request.set_name(flags->name);
      v1::Port response;
      auto status = v1::PortService::NewStub(client.channel())
                        ->GetPort(client.Context().get(), request, &response);
      return status.ok() ? PrintPort(client, response) : Fail(status);
    };
  });

  CLI::App* list = port->add_subcommand("list", "List all ports (every page)");
  list->add_option("--page-size", flags->page_size, "Ports per request (1-1000)");
  list->callback([&client, &action, flags] {
    action = [&client, flags] {
      auto stub = v1::PortService::NewStub(client.channel());
      v1::ListPortsResponse all;
      v1::ListPortsRequest request;
      request.set_page_size(flags->page_size);
      do {
        v1::ListPortsResponse page;
        auto status = stub->ListPorts(client.Context().get(), request, &page);
        if (!status.ok())
          return Fail(status);
        for (auto& port : *page.mutable_ports())
          *all.add_ports() = std::move(port);
        all.set_total_size(page.total_size());
        request.set_page_token(page.next_page_token());
      } while (!request.page_token().empty());
      std::cout << (client.json() ? Json(all)
                                  : PortTable({all.ports().begin(), all.ports().end()}));
      return int{kExitOk};
    };
  });
}

// ---- uplinks ----

struct UplinkFlags {
  std::string name;
  std::string interface;
  uint32_t queues = 0;
  std::string xdp_mode;
  std::string bind_mode;
  std::string hash_key;
  std::string hash_fields;
  bool symmetric = false;
  bool no_symmetric = false;
  std::string broadcast;
  std::string unknown_unicast;
  std::string rx_checksum;
  uint32_t fdb_ageing_seconds = 0;
  bool allow_missing = false;
  uint64_t expected_generation = 0;
  int32_t page_size = 0;
  CLI::App* command = nullptr;
};

void AddUplinkSpecFlags(CLI::App* command, UplinkFlags& flags, bool update) {
  command->add_option("--interface", flags.interface, "Linux interface name");
  command->add_option("--queues", flags.queues, "Queues to bind (0: all of the interface's)");
  command->add_option("--xdp-mode", flags.xdp_mode, "auto, native or skb");
  command->add_option("--bind-mode", flags.bind_mode, "AF_XDP bind: auto, copy or zero-copy");
  command->add_option("--hash-key", flags.hash_key, "Toeplitz key, 40 bytes as 80 hex digits");
  command->add_option("--hash-fields", flags.hash_fields,
                      "Comma list of ipv4-addresses, ipv6-addresses, tcp-ports, udp-ports");
  command->add_flag("--symmetric", flags.symmetric, "Same hash for both flow directions");
  if (update) {
    command->add_flag("--no-symmetric", flags.no_symmetric, "Direction-dependent hash");
    command->add_option("--expected-generation", flags.expected_generation,
                        "Fail unless the uplink is at this generation");
  }
  command->add_option("--broadcast", flags.broadcast, "flood, pass-to-host or drop");
  command->add_option("--unknown-unicast", flags.unknown_unicast, "pass-to-host, drop or flood");
  command->add_option("--rx-checksum", flags.rx_checksum,
                      "verify (DATA_VALID for guests with GUEST_CSUM) or guest-verifies");
  command->add_option("--fdb-ageing-seconds", flags.fdb_ageing_seconds,
                      "Forget learned MACs unused this long (1-1000000; 0: 300)");
}

void ApplyUplinkFlags(const UplinkFlags& flags, v1::UplinkSpec& spec) {
  auto given = [&](const char* flag) { return flags.command->count(flag) > 0; };
  if (given("--interface"))
    spec.set_interface(flags.interface);
  if (given("--queues"))
    spec.set_queue_count(flags.queues);
  if (given("--xdp-mode")) {
    spec.set_xdp_mode(
        ParseEnum<v1::XdpMode>(v1::XdpMode_descriptor(), flags.xdp_mode, "--xdp-mode"));
  }
  if (given("--bind-mode")) {
    spec.set_bind_mode(
        ParseEnum<v1::XskBindMode>(v1::XskBindMode_descriptor(), flags.bind_mode, "--bind-mode"));
  }
  if (given("--hash-key")) {
    if (flags.hash_key.size() % 2 != 0 ||
        flags.hash_key.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
      throw UsageError{"--hash-key: give the key as hex digits, two per byte"};
    }
    spec.mutable_hash()->set_key(absl::HexStringToBytes(flags.hash_key));
  }
  if (given("--hash-fields")) {
    spec.mutable_hash()->clear_fields();
    for (absl::string_view field : absl::StrSplit(flags.hash_fields, ',', absl::SkipEmpty())) {
      spec.mutable_hash()->add_fields(ParseEnum<v1::HashField>(
          v1::HashField_descriptor(), std::string(field), "--hash-fields"));
    }
  }
  if (flags.symmetric)
    spec.mutable_hash()->set_symmetric(true);
  if (flags.no_symmetric)
    spec.mutable_hash()->set_symmetric(false);
  if (given("--broadcast")) {
    spec.set_broadcast_policy(ParseEnum<v1::BroadcastPolicy>(v1::BroadcastPolicy_descriptor(),
                                                             flags.broadcast, "--broadcast"));
  }
  if (given("--unknown-unicast")) {
    spec.set_unknown_unicast_policy(ParseEnum<v1::UnknownUnicastPolicy>(
        v1::UnknownUnicastPolicy_descriptor(), flags.unknown_unicast, "--unknown-unicast"));
  }
  if (given("--rx-checksum")) {
    spec.set_rx_checksum_policy(ParseEnum<v1::RxChecksumPolicy>(
        v1::RxChecksumPolicy_descriptor(), flags.rx_checksum, "--rx-checksum"));
  }
  if (given("--fdb-ageing-seconds"))
    spec.set_fdb_ageing_seconds(flags.fdb_ageing_seconds);
}

int PrintUplink(Client& client, const v1::Uplink& uplink) {
  std::cout << (client.json() ? Json(uplink) : UplinkDetails(uplink));
  return kExitOk;
}

void AddUplinkCommands(CLI::App& app, Client& client, std::function<int()>& action) {
  CLI::App* uplink = app.add_subcommand("uplink", "Uplinks: host interfaces steered with XDP");
  uplink->require_subcommand(1);
  auto flags = std::make_shared<UplinkFlags>();

  CLI::App* create = uplink->add_subcommand("create", "Create an uplink (idempotent)");
  create->add_option("name", flags->name, "Uplink name")->required();
  AddUplinkSpecFlags(create, *flags, false);
  create->get_option("--interface")->required();
  create->callback([&client, &action, flags, create] {
    action = [&client, flags, create] {
      flags->command = create;
      v1::CreateUplinkRequest request;
      request.mutable_uplink()->set_name(flags->name);
      ApplyUplinkFlags(*flags, *request.mutable_uplink()->mutable_spec());
      v1::Uplink response;
      auto status = v1::UplinkService::NewStub(client.channel())
                        ->CreateUplink(client.Context().get(), request, &response);
      return status.ok() ? PrintUplink(client, response) : Fail(status);
    };
  });

  CLI::App* update = uplink->add_subcommand(
      "update", "Change the given settings of an uplink (others keep their values)");
  update->add_option("name", flags->name, "Uplink name")->required();
  AddUplinkSpecFlags(update, *flags, true);
  update->callback([&client, &action, flags, update] {
    action = [&client, flags, update] {
      flags->command = update;
      auto stub = v1::UplinkService::NewStub(client.channel());
      v1::GetUplinkRequest get;
      get.set_name(flags->name);
      v1::Uplink current;
      auto status = stub->GetUplink(client.Context().get(), get, &current);
      if (!status.ok())
        return Fail(status);
      v1::UpdateUplinkRequest request;
      request.mutable_uplink()->set_name(flags->name);
      *request.mutable_uplink()->mutable_spec() = current.spec();
      ApplyUplinkFlags(*flags, *request.mutable_uplink()->mutable_spec());
      request.set_expected_generation(flags->expected_generation != 0
                                          ? flags->expected_generation
                                          : current.meta().generation());
      v1::Uplink response;
      status = stub->UpdateUplink(client.Context().get(), request, &response);
      return status.ok() ? PrintUplink(client, response) : Fail(status);
    };
  });

  CLI::App* remove = uplink->add_subcommand("delete", "Delete an uplink no port uses");
  remove->add_option("name", flags->name, "Uplink name")->required();
  remove->add_flag("--allow-missing", flags->allow_missing, "Succeed if it does not exist");
  remove->callback([&client, &action, flags] {
    action = [&client, flags] {
      v1::DeleteUplinkRequest request;
      request.set_name(flags->name);
      request.set_allow_missing(flags->allow_missing);
      google::protobuf::Empty response;
      auto status = v1::UplinkService::NewStub(client.channel())
                        ->DeleteUplink(client.Context().get(), request, &response);
      if (!status.ok())
        return Fail(status);
      std::cout << (client.json() ? std::string("{}\n")
                                  : absl::StrCat("uplink ", flags->name, " deleted\n"));
      return int{kExitOk};
    };
  });

  CLI::App* get = uplink->add_subcommand("get", "Show one uplink with its status");
  get->add_option("name", flags->name, "Uplink name")->required();
  get->callback([&client, &action, flags] {
    action = [&client, flags] {
      v1::GetUplinkRequest request;
      request.set_name(flags->name);
      v1::Uplink response;
      auto status = v1::UplinkService::NewStub(client.channel())
                        ->GetUplink(client.Context().get(), request, &response);
      return status.ok() ? PrintUplink(client, response) : Fail(status);
    };
  });

  CLI::App* list = uplink->add_subcommand("list", "List all uplinks (every page)");
  list->add_option("--page-size", flags->page_size, "Uplinks per request (1-1000)");
  list->callback([&client, &action, flags] {
    action = [&client, flags] {
      auto stub = v1::UplinkService::NewStub(client.channel());
      v1::ListUplinksResponse all;
      v1::ListUplinksRequest request;
      request.set_page_size(flags->page_size);
      do {
        v1::ListUplinksResponse page;
        auto status = stub->ListUplinks(client.Context().get(), request, &page);
        if (!status.ok())
          return Fail(status);
        for (auto& uplink : *page.mutable_uplinks())
          *all.add_uplinks() = std::move(uplink);
        all.set_total_size(page.total_size());
        request.set_page_token(page.next_page_token());
      } while (!request.page_token().empty());
      std::cout << (client.json() ? Json(all)
                                  : UplinkTable({all.uplinks().begin(), all.uplinks().end()}));
      return int{kExitOk};
    };
  });
}

// ---- FDB ----

struct FdbFlags {
  std::string mac;
  uint32_t vlan = 0;
  std::string port;
  std::string type;
  bool allow_missing = false;
  int32_t page_size = 0;
};

void AddFdbCommands(CLI::App& app, Client& client, std::function<int()>& action) {
  CLI::App* fdb = app.add_subcommand("fdb", "Forwarding database: static and learned entries");
  fdb->require_subcommand(1);
  auto flags = std::make_shared<FdbFlags>();
  auto print = [&client](const v1::FdbEntry& entry) {
    std::cout << (client.json() ? Json(entry) : FdbTable({entry}));
    return int{kExitOk};
  };

  CLI::App* create = fdb->add_subcommand("create", "Add a static entry (idempotent)");
  create->add_option("--mac", flags->mac, "Destination MAC")->required();
  create->add_option("--vlan", flags->vlan, "VLAN id, 0 or omitted: untagged");
  create->add_option("--port", flags->port, "Port that frames to the MAC go to")->required();
  create->callback([&client, &action, flags, print] {
    action = [&client, flags, print] {
      v1::CreateFdbEntryRequest request;
      request.mutable_entry()->set_mac(flags->mac);
      request.mutable_entry()->set_vlan(flags->vlan);
      request.mutable_entry()->set_port(flags->port);
      v1::FdbEntry response;
      auto status = v1::FdbService::NewStub(client.channel())
                        ->CreateFdbEntry(client.Context().get(), request, &response);
      return status.ok() ? print(response) : Fail(status);
    };
  });

  CLI::App* remove = fdb->add_subcommand("delete", "Delete a static entry");
  remove->add_option("--mac", flags->mac, "Destination MAC")->required();
  remove->add_option("--vlan", flags->vlan, "VLAN id, 0 or omitted: untagged");
  remove->add_flag("--allow-missing", flags->allow_missing, "Succeed if it does not exist");
  remove->callback([&client, &action, flags] {
    action = [&client, flags] {
      v1::DeleteFdbEntryRequest request;
      request.set_mac(flags->mac);
      request.set_vlan(flags->vlan);
      request.set_allow_missing(flags->allow_missing);
      google::protobuf::Empty response;
      auto status = v1::FdbService::NewStub(client.channel())
                        ->DeleteFdbEntry(client.Context().get(), request, &response);
      if (!status.ok())
        return Fail(status);
      std::cout << (client.json() ? std::string("{}\n")
                                  : absl::StrCat("fdb entry ", flags->mac, " vlan ", flags->vlan,
                                                 " deleted\n"));
      return int{kExitOk};
    };
  });

  CLI::App* get = fdb->add_subcommand("get", "Show one entry");
  get->add_option("--mac", flags->mac, "Destination MAC")->required();
  get->add_option("--vlan", flags->vlan, "VLAN id, 0 or omitted: untagged");
  get->callback([&client, &action, flags, print] {
    action = [&client, flags, print] {
      v1::GetFdbEntryRequest request;
      request.set_mac(flags->mac);
      request.set_vlan(flags->vlan);
      v1::FdbEntry response;
      auto status = v1::FdbService::NewStub(client.channel())
                        ->GetFdbEntry(client.Context().get(), request, &response);
      return status.ok() ? print(response) : Fail(status);
    };
  });

  CLI::App* list = fdb->add_subcommand("list", "List entries (every page)");
  list->add_option("--port", flags->port, "Only entries pointing at this port");
  list->add_option("--type", flags->type, "Only static or learned entries")
      ->check(CLI::IsMember({"static", "learned"}));
  list->add_option("--page-size", flags->page_size, "Entries per request (1-1000)");
  list->callback([&client, &action, flags] {
    action = [&client, flags] {
      auto stub = v1::FdbService::NewStub(client.channel());
      v1::ListFdbEntriesResponse all;
      v1::ListFdbEntriesRequest request;
      request.set_page_size(flags->page_size);
      request.set_port(flags->port);
      if (!flags->type.empty()) {
        request.set_type(flags->type == "static" ? v1::FDB_ENTRY_TYPE_STATIC
                                                 : v1::FDB_ENTRY_TYPE_LEARNED);
      }
      do {
        v1::ListFdbEntriesResponse page;
        auto status = stub->ListFdbEntries(client.Context().get(), request, &page);
        if (!status.ok())
          return Fail(status);
        for (auto& entry : *page.mutable_entries())
          *all.add_entries() = std::move(entry);
        all.set_total_size(page.total_size());
        request.set_page_token(page.next_page_token());
      } while (!request.page_token().empty());
      std::cout << (client.json() ? Json(all)
                                  : FdbTable({all.entries().begin(), all.entries().end()}));
      return int{kExitOk};
    };
  });
}

// ---- stats, health, version ----

struct StatsFlags {
  std::vector<std::string> ports;
  std::vector<std::string> uplinks;
  bool watch = false;
  uint32_t interval_ms = 1000;
  uint64_t count = 0;
  std::string service;
  bool client_only = false;
};

void AddOtherCommands(CLI::App& app, Client& client, std::function<int()>& action) {
  auto flags = std::make_shared<StatsFlags>();

  CLI::App* stats = app.add_subcommand("stats", "Counters of ports, uplinks, workers, API");
  stats->add_option("--port", flags->ports, "Only this port; repeatable");
  stats->add_option("--uplink", flags->uplinks, "Only this uplink; repeatable");
  stats->add_flag("--watch", flags->watch, "Keep printing snapshots until interrupted");
  stats->add_option("--interval-ms", flags->interval_ms, "Time between snapshots (--watch)")
      ->capture_default_str();
  stats->add_option("--count", flags->count, "With --watch: stop after this many snapshots");
  stats->callback([&client, &action, flags] {
    action = [&client, flags] {
      v1::GetStatsRequest selector;
      for (const auto& port : flags->ports)
        selector.add_ports(port);
      for (const auto& uplink : flags->uplinks)
        selector.add_uplinks(uplink);
      auto stub = v1::StatsService::NewStub(client.channel());
      if (!flags->watch) {
        v1::Stats response;
        auto status = stub->GetStats(client.Context().get(), selector, &response);
        if (!status.ok())
          return Fail(status);
        std::cout << (client.json() ? Json(response) : StatsText(response));
        return int{kExitOk};
      }
      v1::WatchStatsRequest request;
      *request.mutable_selector() = selector;
      request.set_interval_ms(flags->interval_ms);
      grpc::ClientContext context;  // no deadline: the stream runs until stopped
      auto reader = stub->WatchStats(&context, request);
      v1::Stats snapshot;
      uint64_t received = 0;
      while (reader->Read(&snapshot)) {
        // JSON Lines: one compact object per snapshot.
        std::cout << (client.json() ? Json(snapshot, true) : StatsText(snapshot) + "\n")
                  << std::flush;
        if (flags->count != 0 && ++received >= flags->count) {
          context.TryCancel();
          break;
        }
      }
      auto status = reader->Finish();
      if (flags->count != 0 && received >= flags->count)
        return int{kExitOk};
      return status.ok() ? int{kExitOk} : Fail(status);
    };
  });

  CLI::App* health = app.add_subcommand(
      "health", "grpc.health.v1 check; exit 0 only when SERVING (for Kubernetes exec probes)");
  health->add_option("--service", flags->service, "Service to check; default: the whole agent");
  health->callback([&client, &action, flags] {
    action = [&client, flags] {
      grpc::health::v1::HealthCheckRequest request;
      request.set_service(flags->service);
      grpc::health::v1::HealthCheckResponse response;
      auto status = grpc::health::v1::Health::NewStub(client.channel())
                        ->Check(client.Context().get(), request, &response);
      if (!status.ok())
        return Fail(status);
      const std::string name =
          grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
      if (client.json()) {
        std::cout << Json(response);
      } else {
        std::cout << name << "\n";
      }
      return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? int{kExitOk}
                                                                                 : int{kExitFailed};
    };
  });

  CLI::App* version = app.add_subcommand("version", "Versions of xvioctl and of the agent");
  version->add_flag("--client", flags->client_only, "Only xvioctl's version (no agent needed)");
  version->callback([&client, &action, flags] {
    action = [&client, flags] {
      if (flags->client_only) {
        std::cout << (client.json()
                          ? absl::StrCat("{\n \"client_version\": \"", XVIO_VERSION, "\"\n}\n")
                          : absl::StrCat("xvioctl ", XVIO_VERSION, "\n"));
        return int{kExitOk};
      }
      v1::AgentInfo info;
      auto status = v1::AgentService::NewStub(client.channel())
                        ->GetAgentInfo(client.Context().get(), v1::GetAgentInfoRequest(), &info);
      if (!status.ok()) {
        std::cout << "xvioctl " << XVIO_VERSION << "\n";
        return Fail(status);
      }
      if (client.json()) {
        std::cout << Json(info);
      } else {
        std::cout << "xvioctl " << XVIO_VERSION << "\n" << AgentInfoText(info);
      }
      return int{kExitOk};
    };
  });
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app("xvioctl: command-line client of the xvio agent's gRPC API (xvio.v1).", "xvioctl");
  app.footer(kExitCodesHelp);
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("xvioctl ") + XVIO_VERSION);
  GlobalOptions options;
  app.add_option("--addr", options.connection.address, "Agent address: unix:///path or host:port")
      ->envname("XVIO_ADDR")
      ->capture_default_str();
  app.add_option("--ca", options.connection.ca_file, "TCP: PEM CA for the agent's certificate");
  app.add_option("--cert", options.connection.cert_file, "TCP: PEM client certificate (mTLS)");
  app.add_option("--key", options.connection.key_file, "TCP: private key of --cert");
  app.add_option("--server-name", options.connection.server_name,
                 "TCP: name to verify in the agent's certificate instead of the host");
  app.add_flag("--insecure", options.connection.insecure,
               "TCP without TLS (only for an agent run with --insecure-tcp)");
  app.add_option("-o,--output", options.output, "Output format: table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app.add_option("--timeout", options.timeout_seconds, "Seconds to wait for each request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  Client client(options);
  std::function<int()> action;
  AddPortCommands(app, client, action);
  AddUplinkCommands(app, client, action);
  AddFdbCommands(app, client, action);
  AddOtherCommands(app, client, action);

  // A mistake prints the message and the usage of the subcommand the user
  // was typing (the deepest one parsed), e.g. "xvioctl port create".
  auto usage_error = [&app](const std::string& message) {
    CLI::App* command = &app;
    std::string parents;
    while (!command->get_subcommands().empty()) {
      parents += (parents.empty() ? "" : " ") + command->get_name();
      command = command->get_subcommands().front();
    }
    std::cerr << "xvioctl: " << message << "\n\n" << command->help(parents);
    return int{kExitUsage};
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForVersion& version) {
    return app.exit(version);
  } catch (const CLI::ParseError& error) {
    return usage_error(error.what());
  }
  try {
    return action ? action() : kExitUsage;
  } catch (const UsageError& error) {
    return usage_error(error.message);
  }
}

}  // namespace xvio::ctl

int main(int argc, char** argv) {
  try {
    return xvio::ctl::Main(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "xvioctl: unexpected error: " << error.what() << "\n";
    return xvio::ctl::kExitFailed;
  }
}
