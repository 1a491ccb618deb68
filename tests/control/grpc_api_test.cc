// Integration tests of the xvio.v1 gRPC API: a real server (the agent's
// control plane, detached datapath) on a real unix socket and on TCP with
// mTLS, real gRPC clients. Every RPC's success path, a bad-input table that
// leaves state unchanged, health, reflection, streaming, concurrency with
// fd/memory accounting, and transport security.
#include <sys/stat.h>

#include <grp.h>

#include <atomic>
#include <thread>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/control/control_test_support.h"
#include "xvio/v1/agent.grpc.pb.h"
#include "xvio/v1/fdb.grpc.pb.h"
#include "xvio/v1/port.grpc.pb.h"
#include "xvio/v1/stats.grpc.pb.h"
#include "xvio/v1/uplink.grpc.pb.h"

namespace xvio::control {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;
using xvio::testing::InProcessAgent;
using xvio::testing::ScratchDir;

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return context;
}

v1::Port MakePort(const std::string& name, const std::string& mac = "", uint32_t vlan = 0) {
  v1::Port port;
  port.set_name(name);
  port.mutable_spec()->mutable_vhost_user()->set_socket_path(name + ".sock");
  if (!mac.empty())
    port.mutable_spec()->add_macs(mac);
  if (vlan != 0)
    port.mutable_spec()->set_access_vlan(vlan);
  return port;
}

// One server reflection (grpc.reflection.v1alpha) request, spoken with
// dynamic messages built from the descriptors grpc++_reflection links in.
grpc::Status AskReflection(const std::shared_ptr<grpc::Channel>& channel,
                           google::protobuf::DynamicMessageFactory& factory, const char* field,
                           const std::string& value,
                           std::unique_ptr<google::protobuf::Message>* reply) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  const auto* request_type =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionRequest");
  const auto* response_type =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionResponse");
  if (request_type == nullptr || response_type == nullptr) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "reflection descriptors not linked");
  }
  std::unique_ptr<google::protobuf::Message> request(factory.GetPrototype(request_type)->New());
  request->GetReflection()->SetString(request.get(), request_type->FindFieldByName(field), value);
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::CompletionQueue queue;
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
  void* tag = nullptr;
  bool ok = false;
  // Each step waits for its own completion; a failed step (e.g. the service
  // does not exist) shows in the status Finish returns.
  call->StartCall(reinterpret_cast<void*>(1));
  queue.Next(&tag, &ok);
  grpc::Slice slice(request->SerializeAsString());
  grpc::ByteBuffer out(&slice, 1);
  call->WriteLast(out, grpc::WriteOptions(), reinterpret_cast<void*>(2));
  queue.Next(&tag, &ok);
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  const bool got_reply = queue.Next(&tag, &ok) && ok;
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  queue.Next(&tag, &ok);
  if (!status.ok())
    return status;
  if (!got_reply)
    return grpc::Status(grpc::StatusCode::INTERNAL, "no reflection reply");
  std::vector<grpc::Slice> slices;
  if (!in.Dump(&slices).ok())
    return grpc::Status(grpc::StatusCode::INTERNAL, "cannot read the reply");
  std::string bytes;
  for (const auto& part : slices)
    bytes.append(reinterpret_cast<const char*>(part.begin()), part.size());
  reply->reset(factory.GetPrototype(response_type)->New());
  if (!(*reply)->ParseFromString(bytes))
    return grpc::Status(grpc::StatusCode::INTERNAL, "unparsable reply");
  return grpc::Status::OK;
}

class GrpcApiTest : public ::testing::Test {
 public:  // the bad-input table's lambdas call the helpers and stubs
  GrpcApiTest()
      : agent_(dir_.path()),
        channel_(agent_.Channel()),
        ports_(v1::PortService::NewStub(channel_)),
        uplinks_(v1::UplinkService::NewStub(channel_)),
        fdb_(v1::FdbService::NewStub(channel_)),
        stats_(v1::StatsService::NewStub(channel_)),
        agent_service_(v1::AgentService::NewStub(channel_)) {}

  grpc::Status CreatePort(const v1::Port& port, v1::Port* response = nullptr) {
    v1::CreatePortRequest request;
    *request.mutable_port() = port;
    v1::Port ignored;
    return ports_->CreatePort(Context().get(), request, response ? response : &ignored);
  }
  grpc::Status DeletePort(const std::string& name, bool allow_missing = false) {
    v1::DeletePortRequest request;
    request.set_name(name);
    request.set_allow_missing(allow_missing);
    google::protobuf::Empty response;
    return ports_->DeletePort(Context().get(), request, &response);
  }
  // Everything a client can see, to prove a rejected request changed nothing.
  std::string Snapshot() {
    std::string snapshot;
    v1::ListPortsRequest port_request;
    port_request.set_page_size(1000);
    v1::ListPortsResponse port_list;
    EXPECT_TRUE(ports_->ListPorts(Context().get(), port_request, &port_list).ok());
    v1::ListUplinksResponse uplink_list;
    EXPECT_TRUE(uplinks_->ListUplinks(Context().get(), {}, &uplink_list).ok());
    v1::ListFdbEntriesResponse fdb_list;
    EXPECT_TRUE(fdb_->ListFdbEntries(Context().get(), {}, &fdb_list).ok());
    return port_list.SerializeAsString() + "|" + uplink_list.SerializeAsString() + "|" +
           fdb_list.SerializeAsString();
  }

  ScratchDir dir_;
  InProcessAgent agent_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PortService::Stub> ports_;
  std::unique_ptr<v1::UplinkService::Stub> uplinks_;
  std::unique_ptr<v1::FdbService::Stub> fdb_;
  std::unique_ptr<v1::StatsService::Stub> stats_;
  std::unique_ptr<v1::AgentService::Stub> agent_service_;
};

TEST_F(GrpcApiTest, EveryRpcSucceedsOnItsHappyPath) {
  // Uplinks.
  v1::CreateUplinkRequest create_uplink;
  create_uplink.mutable_uplink()->set_name("up0");
  create_uplink.mutable_uplink()->mutable_spec()->set_interface("lo");
  v1::Uplink uplink;
  ASSERT_TRUE(uplinks_->CreateUplink(Context().get(), create_uplink, &uplink).ok());
  EXPECT_TRUE(uplink.status().interface_present());  // lo always exists
  EXPECT_EQ(uplink.status().datapath().state(), v1::DATAPATH_STATE_NOT_ATTACHED);
  EXPECT_THAT(uplink.status().datapath().message(), HasSubstr("without a datapath"));
  v1::UpdateUplinkRequest update_uplink;
  *update_uplink.mutable_uplink() = uplink;
  update_uplink.mutable_uplink()->mutable_spec()->mutable_hash()->set_symmetric(true);
  update_uplink.set_expected_generation(1);
  ASSERT_TRUE(uplinks_->UpdateUplink(Context().get(), update_uplink, &uplink).ok());
  EXPECT_EQ(uplink.meta().generation(), 2u);
  v1::GetUplinkRequest get_uplink;
  get_uplink.set_name("up0");
  ASSERT_TRUE(uplinks_->GetUplink(Context().get(), get_uplink, &uplink).ok());
  EXPECT_TRUE(uplink.spec().hash().symmetric());
  v1::ListUplinksResponse uplink_list;
  ASSERT_TRUE(uplinks_->ListUplinks(Context().get(), {}, &uplink_list).ok());
  EXPECT_EQ(uplink_list.uplinks_size(), 1);

  // Ports.
  v1::Port port = MakePort("vm1", "52:54:00:00:00:01", 10);
  port.mutable_spec()->set_uplink("up0");
  v1::Port created;
  ASSERT_TRUE(CreatePort(port, &created).ok());
  EXPECT_EQ(created.spec().vhost_user().socket_path(), (dir_ / "run" / "vm1.sock").string());
  EXPECT_EQ(created.status().datapath().state(), v1::DATAPATH_STATE_NOT_ATTACHED);
  v1::Port again;
  ASSERT_TRUE(CreatePort(port, &again).ok());  // idempotent
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(created, again));
  v1::UpdatePortRequest update_port;
  *update_port.mutable_port() = created;
  update_port.mutable_port()->mutable_spec()->set_queue_pairs(4);
  v1::Port updated;
  ASSERT_TRUE(ports_->UpdatePort(Context().get(), update_port, &updated).ok());
  EXPECT_EQ(updated.spec().queue_pairs(), 4u);
  v1::GetPortRequest get_port;
  get_port.set_name("vm1");
  v1::Port fetched;
  ASSERT_TRUE(ports_->GetPort(Context().get(), get_port, &fetched).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(updated, fetched));
  v1::ListPortsResponse port_list;
  ASSERT_TRUE(ports_->ListPorts(Context().get(), {}, &port_list).ok());
  ASSERT_EQ(port_list.ports_size(), 1);

  // FDB.
  v1::CreateFdbEntryRequest create_entry;
  create_entry.mutable_entry()->set_mac("52:54:00:00:00:aa");
  create_entry.mutable_entry()->set_vlan(10);
  create_entry.mutable_entry()->set_port("vm1");
  v1::FdbEntry entry;
  ASSERT_TRUE(fdb_->CreateFdbEntry(Context().get(), create_entry, &entry).ok());
  EXPECT_EQ(entry.type(), v1::FDB_ENTRY_TYPE_STATIC);
  v1::GetFdbEntryRequest get_entry;
  get_entry.set_mac("52:54:00:00:00:AA");
  get_entry.set_vlan(10);
  ASSERT_TRUE(fdb_->GetFdbEntry(Context().get(), get_entry, &entry).ok());
  v1::ListFdbEntriesRequest list_entries;
  list_entries.set_port("vm1");
  v1::ListFdbEntriesResponse entries;
  ASSERT_TRUE(fdb_->ListFdbEntries(Context().get(), list_entries, &entries).ok());
  EXPECT_EQ(entries.entries_size(), 1);

  // Agent info and stats.
  v1::AgentInfo info;
  ASSERT_TRUE(agent_service_->GetAgentInfo(Context().get(), {}, &info).ok());
  EXPECT_FALSE(info.version().empty());
  EXPECT_FALSE(info.kernel_release().empty());
  EXPECT_EQ(info.datapath().status().state(), v1::DATAPATH_STATE_NOT_ATTACHED);
  EXPECT_EQ(info.datapath().program_mode(), v1::XDP_PROGRAM_MODE_UNSPECIFIED);
  EXPECT_EQ(info.port_count(), 1u);
  v1::Stats stats;
  ASSERT_TRUE(stats_->GetStats(Context().get(), {}, &stats).ok());
  EXPECT_FALSE(stats.datapath_attached());
  ASSERT_EQ(stats.ports_size(), 1);
  EXPECT_EQ(stats.ports(0).queues_size(), 4);
  EXPECT_EQ(stats.control().port_count(), 1u);
  bool counted = false;
  for (const auto& request : stats.control().requests()) {
    if (request.method() == "xvio.v1.PortService/CreatePort" && request.code() == "OK") {
      counted = request.count() == 2;
    }
  }
  EXPECT_TRUE(counted) << stats.control().DebugString();

  v1::WatchStatsRequest watch;
  watch.set_interval_ms(100);
  watch.mutable_selector()->add_ports("vm1");
  grpc::ClientContext watch_context;
  auto reader = stats_->WatchStats(&watch_context, watch);
  v1::Stats first, second;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_TRUE(reader->Read(&second));
  EXPECT_EQ(second.ports_size(), 1);
  EXPECT_EQ(second.uplinks_size(), 0);
  EXPECT_GE(second.time().seconds() * 1000 + second.time().nanos() / 1000000,
            first.time().seconds() * 1000 + first.time().nanos() / 1000000 + 90);
  watch_context.TryCancel();
  while (reader->Read(&second)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // Deletes, in dependency order.
  v1::DeleteFdbEntryRequest delete_entry;
  delete_entry.set_mac("52:54:00:00:00:aa");
  delete_entry.set_vlan(10);
  google::protobuf::Empty empty;
  ASSERT_TRUE(fdb_->DeleteFdbEntry(Context().get(), delete_entry, &empty).ok());
  ASSERT_TRUE(DeletePort("vm1").ok());
  v1::DeleteUplinkRequest delete_uplink;
  delete_uplink.set_name("up0");
  ASSERT_TRUE(uplinks_->DeleteUplink(Context().get(), delete_uplink, &empty).ok());
  EXPECT_EQ(Snapshot(), [] {
    v1::ListPortsResponse ports;
    v1::ListUplinksResponse uplinks;
    v1::ListFdbEntriesResponse entries;
    return ports.SerializeAsString() + "|" + uplinks.SerializeAsString() + "|" +
           entries.SerializeAsString();
  }());
}

struct BadRequest {
  const char* what;
  std::function<grpc::Status(GrpcApiTest&)> call;
  grpc::StatusCode code;
  const char* message;
};

TEST_F(GrpcApiTest, BadInputGivesTheRightCodeAndMessageAndChangesNothing) {
  ASSERT_TRUE(CreatePort(MakePort("vm1", "52:54:00:00:00:01", 10)).ok());
  const std::string before = Snapshot();
  auto create = [](const v1::Port& port) {
    return [port](GrpcApiTest& test) { return test.CreatePort(port); };
  };
  auto with = [](const std::function<void(v1::Port&)>& mutate) {
    v1::Port port = MakePort("vm2", "52:54:00:00:00:02");
    mutate(port);
    return port;
  };
  using Code = grpc::StatusCode;
  const std::vector<BadRequest> cases = {
      {"bad name", create(with([](v1::Port& p) { p.set_name("vm 2"); })), Code::INVALID_ARGUMENT,
       "port.name: \"vm 2\" may only contain"},
      {"bad mac", create(with([](v1::Port& p) { p.mutable_spec()->set_macs(0, "zz"); })),
       Code::INVALID_ARGUMENT, "port.spec.macs[0]: \"zz\" is not a MAC"},
      {"vlan", create(with([](v1::Port& p) { p.mutable_spec()->set_access_vlan(5000); })),
       Code::INVALID_ARGUMENT, "VLAN 5000 is out of range; use 1-4094"},
      {"mtu", create(with([](v1::Port& p) { p.mutable_spec()->set_mtu(20); })),
       Code::INVALID_ARGUMENT, "port.spec.mtu: 20 is out of range"},
      {"queues", create(with([](v1::Port& p) { p.mutable_spec()->set_queue_pairs(1000); })),
       Code::INVALID_ARGUMENT, "port.spec.queue_pairs"},
      {"socket", create(with([](v1::Port& p) {
         p.mutable_spec()->mutable_vhost_user()->set_socket_path("../x.sock");
       })),
       Code::INVALID_ARGUMENT, "port.spec.vhost_user.socket_path"},
      {"different spec", create(MakePort("vm1", "52:54:00:00:00:03")), Code::ALREADY_EXISTS,
       "already exists with a different spec"},
      {"mac clash", create(with([](v1::Port& p) {
         p.mutable_spec()->set_macs(0, "52:54:00:00:00:01");
         p.mutable_spec()->set_access_vlan(10);
       })),
       Code::ALREADY_EXISTS, "already belongs to port \"vm1\""},
      {"missing uplink", create(with([](v1::Port& p) { p.mutable_spec()->set_uplink("up9"); })),
       Code::FAILED_PRECONDITION, "uplink \"up9\" does not exist"},
      {"update missing",
       [](GrpcApiTest& test) {
         v1::UpdatePortRequest request;
         *request.mutable_port() = MakePort("ghost");
         v1::Port response;
         return test.ports_->UpdatePort(Context().get(), request, &response);
       },
       Code::NOT_FOUND, "port \"ghost\" does not exist"},
      {"stale generation",
       [](GrpcApiTest& test) {
         v1::UpdatePortRequest request;
         *request.mutable_port() = MakePort("vm1", "52:54:00:00:00:01", 11);
         request.set_expected_generation(5);
         v1::Port response;
         return test.ports_->UpdatePort(Context().get(), request, &response);
       },
       Code::ABORTED, "is at generation 1, not 5"},
      {"delete missing", [](GrpcApiTest& test) { return test.DeletePort("ghost"); },
       Code::NOT_FOUND, "does not exist"},
      {"get bad name",
       [](GrpcApiTest& test) {
         v1::GetPortRequest request;
         request.set_name("");
         v1::Port response;
         return test.ports_->GetPort(Context().get(), request, &response);
       },
       Code::INVALID_ARGUMENT, "name: is required"},
      {"page size",
       [](GrpcApiTest& test) {
         v1::ListPortsRequest request;
         request.set_page_size(-5);
         v1::ListPortsResponse response;
         return test.ports_->ListPorts(Context().get(), request, &response);
       },
       Code::INVALID_ARGUMENT, "page_size: -5 is out of range"},
      {"page token",
       [](GrpcApiTest& test) {
         v1::ListPortsRequest request;
         request.set_page_token("not-a-token");
         v1::ListPortsResponse response;
         return test.ports_->ListPorts(Context().get(), request, &response);
       },
       Code::INVALID_ARGUMENT, "page_token: not a token"},
      {"uplink interface",
       [](GrpcApiTest& test) {
         v1::CreateUplinkRequest request;
         request.mutable_uplink()->set_name("up0");
         request.mutable_uplink()->mutable_spec()->set_interface("way-too-long-name0");
         v1::Uplink response;
         return test.uplinks_->CreateUplink(Context().get(), request, &response);
       },
       Code::INVALID_ARGUMENT, "uplink.spec.interface"},
      {"uplink hash key",
       [](GrpcApiTest& test) {
         v1::CreateUplinkRequest request;
         request.mutable_uplink()->set_name("up0");
         request.mutable_uplink()->mutable_spec()->set_interface("lo");
         request.mutable_uplink()->mutable_spec()->mutable_hash()->set_key("abc");
         v1::Uplink response;
         return test.uplinks_->CreateUplink(Context().get(), request, &response);
       },
       Code::INVALID_ARGUMENT, "uplink.spec.hash.key: is 3 bytes"},
      {"fdb unknown port",
       [](GrpcApiTest& test) {
         v1::CreateFdbEntryRequest request;
         request.mutable_entry()->set_mac("52:54:00:00:00:0f");
         request.mutable_entry()->set_port("ghost");
         v1::FdbEntry response;
         return test.fdb_->CreateFdbEntry(Context().get(), request, &response);
       },
       Code::FAILED_PRECONDITION, "port \"ghost\" does not exist"},
      {"fdb multicast",
       [](GrpcApiTest& test) {
         v1::CreateFdbEntryRequest request;
         request.mutable_entry()->set_mac("33:33:00:00:00:01");
         request.mutable_entry()->set_port("vm1");
         v1::FdbEntry response;
         return test.fdb_->CreateFdbEntry(Context().get(), request, &response);
       },
       Code::INVALID_ARGUMENT, "entry.mac: \"33:33:00:00:00:01\" is a multicast"},
      {"stats unknown port",
       [](GrpcApiTest& test) {
         v1::GetStatsRequest request;
         request.add_ports("ghost");
         v1::Stats response;
         return test.stats_->GetStats(Context().get(), request, &response);
       },
       Code::NOT_FOUND, "port \"ghost\" does not exist"},
      {"watch interval",
       [](GrpcApiTest& test) {
         v1::WatchStatsRequest request;
         request.set_interval_ms(5);
         grpc::ClientContext context;
         auto reader = test.stats_->WatchStats(&context, request);
         v1::Stats response;
         while (reader->Read(&response)) {
         }
         return reader->Finish();
       },
       Code::INVALID_ARGUMENT, "interval_ms: 5 is out of range; use 100-3600000"},
  };
  for (const auto& test_case : cases) {
    const grpc::Status status = test_case.call(*this);
    EXPECT_EQ(status.error_code(), test_case.code)
        << test_case.what << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(test_case.message)) << test_case.what;
    EXPECT_EQ(Snapshot(), before) << test_case.what << " changed the state";
  }
}

TEST_F(GrpcApiTest, HealthAndReflection) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const std::string service : {"", "xvio.v1.PortService", "xvio.v1.StatsService"}) {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(Context().get(), request, &response).ok()) << service;
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  grpc::health::v1::HealthCheckRequest unknown;
  unknown.set_service("no.such.Service");
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_EQ(health->Check(Context().get(), unknown, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);

  const auto* response_type =
      google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
          "grpc.reflection.v1alpha.ServerReflectionResponse");
  google::protobuf::DynamicMessageFactory factory;
  auto ask = [&](const char* field, const std::string& value) {
    std::unique_ptr<google::protobuf::Message> reply;
    const grpc::Status status = AskReflection(channel_, factory, field, value, &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return reply;
  };

  ASSERT_NE(response_type, nullptr);
  auto listed = ask("list_services", "*");
  ASSERT_NE(listed, nullptr);
  const auto* list_field = response_type->FindFieldByName("list_services_response");
  const auto& list = listed->GetReflection()->GetMessage(*listed, list_field);
  const auto* service_field = list.GetDescriptor()->FindFieldByName("service");
  std::vector<std::string> names;
  for (int i = 0; i < list.GetReflection()->FieldSize(list, service_field); ++i) {
    const auto& service = list.GetReflection()->GetRepeatedMessage(list, service_field, i);
    names.push_back(service.GetReflection()->GetString(
        service, service.GetDescriptor()->FindFieldByName("name")));
  }
  EXPECT_THAT(names, UnorderedElementsAreArray({"xvio.v1.UplinkService", "xvio.v1.PortService",
                                                "xvio.v1.FdbService", "xvio.v1.AgentService",
                                                "xvio.v1.StatsService", "grpc.health.v1.Health",
                                                "grpc.reflection.v1alpha.ServerReflection"}));

  for (const auto& [symbol, file] :
       {std::pair{"xvio.v1.PortService", "xvio/v1/port.proto"},
        std::pair{"grpc.health.v1.Health", "grpc/health/v1/health.proto"}}) {
    auto described = ask("file_containing_symbol", symbol);
    ASSERT_NE(described, nullptr) << symbol;
    const auto* file_field = response_type->FindFieldByName("file_descriptor_response");
    ASSERT_TRUE(described->GetReflection()->HasField(*described, file_field)) << symbol;
    const auto& files = described->GetReflection()->GetMessage(*described, file_field);
    const auto* proto_field = files.GetDescriptor()->FindFieldByName("file_descriptor_proto");
    ASSERT_GE(files.GetReflection()->FieldSize(files, proto_field), 1);
    google::protobuf::FileDescriptorProto descriptor;
    ASSERT_TRUE(descriptor.ParseFromString(
        files.GetReflection()->GetRepeatedString(files, proto_field, 0)));
    EXPECT_EQ(descriptor.name(), file);
  }
}

TEST_F(GrpcApiTest, ShutdownEndsStreamsAndHealthStopsServing) {
  v1::WatchStatsRequest watch;
  watch.set_interval_ms(3600000);
  grpc::ClientContext context;
  auto reader = stats_->WatchStats(&context, watch);
  v1::Stats stats;
  ASSERT_TRUE(reader->Read(&stats));
  const auto started = std::chrono::steady_clock::now();
  agent_.server().Shutdown(std::chrono::milliseconds(2000));
  while (reader->Read(&stats)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
  EXPECT_FALSE(std::filesystem::exists(agent_.socket_path()));
}

// 32 clients, each on its own connection, create 1,000 ports twice over
// (every port by two clients at once: both must succeed, idempotently) and
// delete half of them twice over. The final state is exact, and a second
// round leaves no extra fds or memory behind.
TEST_F(GrpcApiTest, ConcurrentClientsCreateAndDeleteAThousandPorts) {
  constexpr int kClients = 32;
  constexpr int kPorts = 1000;
  auto name_of = [](int i) {
    char name[16];
    std::snprintf(name, sizeof(name), "p%04d", i);
    return std::string(name);
  };
  auto mac_of = [](int i) {
    char mac[32];
    std::snprintf(mac, sizeof(mac), "52:54:00:00:%02x:%02x", (i >> 8) & 0xff, i & 0xff);
    return std::string(mac);
  };
  auto round = [&](int port_count, bool delete_all) {
    std::atomic<int> failures{0};
    std::vector<std::thread> clients;
    clients.reserve(kClients);
    for (int client = 0; client < kClients; ++client) {
      clients.emplace_back([&, client] {
        grpc::ChannelArguments arguments;
        arguments.SetInt("xvio.test.client", client);  // a separate connection per client
        auto channel = grpc::CreateCustomChannel(agent_.unix_address(),
                                                 grpc::InsecureChannelCredentials(), arguments);
        auto stub = v1::PortService::NewStub(channel);
        // Client c handles ports c, c+32, ... and also those of client c^1.
        for (int i = 0; i < port_count; ++i) {
          if (i % kClients != client && i % kClients != (client ^ 1))
            continue;
          v1::CreatePortRequest request;
          *request.mutable_port() = MakePort(name_of(i), mac_of(i), 1 + i % 4094);
          v1::Port response;
          if (!stub->CreatePort(Context().get(), request, &response).ok())
            ++failures;
        }
        for (int i = 0; i < port_count; ++i) {
          if (i % kClients != client && i % kClients != (client ^ 1))
            continue;
          if (!delete_all && i % 2 == 1)
            continue;
          v1::DeletePortRequest request;
          request.set_name(name_of(i));
          request.set_allow_missing(true);
          google::protobuf::Empty response;
          if (!stub->DeletePort(Context().get(), request, &response).ok())
            ++failures;
        }
      });
    }
    for (auto& client : clients)
      client.join();
    return failures.load();
  };

  // Warm-up: server threads, connection set-up paths, allocator pools.
  ASSERT_EQ(round(/*port_count=*/200, /*delete_all=*/true), 0);
  Snapshot();  // the fixture's own connection is open in both measurements
  const std::string fds_listed_before = xvio::testing::OpenFdList();
  const int fds_before = xvio::testing::OpenFdCount();
  const long rss_before = xvio::testing::ResidentKilobytes();
  ASSERT_EQ(round(kPorts, /*delete_all=*/false), 0);

  std::vector<std::string> names;
  v1::ListPortsRequest request;
  request.set_page_size(1000);
  v1::ListPortsResponse response;
  ASSERT_TRUE(ports_->ListPorts(Context().get(), request, &response).ok());
  EXPECT_EQ(response.total_size(), static_cast<uint32_t>(kPorts / 2));
  ASSERT_EQ(response.ports_size(), kPorts / 2);
  for (int i = 1, k = 0; i < kPorts; i += 2, ++k) {
    const v1::Port& port = response.ports(k);
    EXPECT_EQ(port.name(), name_of(i));
    ASSERT_EQ(port.spec().macs_size(), 1);
    EXPECT_EQ(port.spec().macs(0), mac_of(i));
    EXPECT_EQ(port.spec().access_vlan(), static_cast<uint32_t>(1 + i % 4094));
    EXPECT_EQ(port.meta().generation(), 1u);
  }
  // Delete the rest so the comparison below sees the same state as the
  // warm-up's end, then compare resources.
  for (int i = 1; i < kPorts; i += 2)
    ASSERT_TRUE(DeletePort(name_of(i)).ok());
  EXPECT_TRUE(xvio::testing::WaitFor([&] { return xvio::testing::OpenFdCount() <= fds_before; },
                                     std::chrono::seconds(5)))
      << "fds before:\n"
      << fds_listed_before << "after:\n"
      << xvio::testing::OpenFdList();
  const long rss_after = xvio::testing::ResidentKilobytes();
  EXPECT_LT(rss_after - rss_before, 16 * 1024)
      << "RSS grew from " << rss_before << " kB to " << rss_after << " kB";
}

// Transport security: TCP requires mTLS.
class TlsTest : public ::testing::Test {
 protected:
  ScratchDir dir_;
  xvio::testing::TestCertificates certificates_{dir_.path()};

  std::unique_ptr<InProcessAgent> StartAgent(bool tls, bool insecure_tcp) {
    ControlServerOptions options;
    options.listen = {"127.0.0.1:0"};
    if (tls) {
      options.tls.cert_file = certificates_.server_cert;
      options.tls.key_file = certificates_.server_key;
      options.tls.client_ca_file = certificates_.ca_cert;
    }
    options.insecure_tcp = insecure_tcp;
    return std::make_unique<InProcessAgent>(dir_.path(), options);
  }
  static grpc::Status Call(const std::shared_ptr<grpc::Channel>& channel) {
    v1::AgentInfo info;
    auto context = Context();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    return v1::AgentService::NewStub(channel)->GetAgentInfo(context.get(), {}, &info);
  }
  std::shared_ptr<grpc::Channel> TlsChannel(int port, const std::string& cert,
                                            const std::string& key) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = xvio::testing::ReadFileText(certificates_.ca_cert);
    if (!cert.empty()) {
      ssl.pem_cert_chain = xvio::testing::ReadFileText(cert);
      ssl.pem_private_key = xvio::testing::ReadFileText(key);
    }
    return grpc::CreateChannel("localhost:" + std::to_string(port), grpc::SslCredentials(ssl));
  }
};

TEST_F(TlsTest, MutualTlsIsRequiredOnTcp) {
  auto agent = StartAgent(/*tls=*/true, /*insecure_tcp=*/false);
  const int port = agent->server().tcp_ports().at(0);
  ASSERT_GT(port, 0);
  EXPECT_TRUE(Call(TlsChannel(port, certificates_.client_cert, certificates_.client_key)).ok());
  // No client certificate: the handshake fails.
  EXPECT_EQ(Call(TlsChannel(port, "", "")).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A certificate from a CA the agent does not trust: refused too.
  EXPECT_EQ(Call(TlsChannel(port, certificates_.rogue_client_cert, certificates_.rogue_client_key))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // Plain TCP against the TLS port: refused.
  EXPECT_EQ(Call(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials()))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // The unix socket keeps working without TLS.
  EXPECT_TRUE(Call(agent->Channel()).ok());
  // Server reflection is offered on the unix socket only, not over TCP.
  google::protobuf::DynamicMessageFactory factory;
  std::unique_ptr<google::protobuf::Message> reply;
  EXPECT_TRUE(AskReflection(agent->Channel(), factory, "list_services", "*", &reply).ok());
  EXPECT_EQ(AskReflection(TlsChannel(port, certificates_.client_cert, certificates_.client_key),
                          factory, "list_services", "*", &reply)
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(TlsTest, PlainTcpNeedsExplicitOptIn) {
  EXPECT_THROW(
      {
        try {
          StartAgent(/*tls=*/false, /*insecure_tcp=*/false);
        } catch (const std::runtime_error& error) {
          EXPECT_THAT(error.what(), HasSubstr("needs mTLS (--tls-cert, --tls-key, "
                                              "--tls-client-ca), or --insecure-tcp"));
          throw;
        }
      },
      std::runtime_error);
  auto agent = StartAgent(/*tls=*/false, /*insecure_tcp=*/true);
  const int port = agent->server().tcp_ports().at(0);
  EXPECT_TRUE(Call(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::InsecureChannelCredentials()))
                  .ok());
}

TEST(UnixSocket, ModeAndGroupAreAsConfigured) {
  ScratchDir dir;
  const struct group* nogroup = ::getgrnam("nogroup");
  ASSERT_NE(nogroup, nullptr) << "Debian has group nogroup";
  ControlServerOptions options;
  options.listen.clear();
  options.unix_socket_mode = 0640;
  options.unix_socket_group = nogroup->gr_gid;
  InProcessAgent agent(dir.path(), options);
  struct stat info {};
  ASSERT_EQ(::stat(agent.socket_path().c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 07777, 0640u);
  EXPECT_EQ(info.st_gid, nogroup->gr_gid);

  // A second server on the same socket path is refused while the first serves.
  control::DetachedDatapath datapath;
  control::ControlPlaneOptions plane_options;
  plane_options.state_dir = dir / "state2";
  auto plane = control::ControlPlane::Open(plane_options, datapath);
  ASSERT_TRUE(plane.ok());
  ControlServerOptions second;
  second.listen = {agent.unix_address()};
  auto refused = control::ControlServer::Start(second, **plane);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("another process is serving"));
}

}  // namespace
}  // namespace xvio::control
