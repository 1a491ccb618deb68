// Unit tests of the Prometheus rendering: one HELP/TYPE per family, every
// counter of a Stats message under its documented name, label escaping.
#include "agent/control/metrics.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xvio::control {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(Metrics, RendersEveryCounterOnce) {
  v1::Stats stats;
  stats.set_datapath_attached(true);
  auto* port = stats.add_ports();
  port->set_port("vm\"1\\");
  port->mutable_total()->set_rx_frames(11);
  port->mutable_total()->set_tx_bytes(22);
  (*port->mutable_total()->mutable_drops())["no_rx_buffer"] = 3;
  auto* queue = port->add_queues();
  queue->set_queue(1);
  queue->mutable_counters()->set_kicks(4);
  auto* uplink = stats.add_uplinks();
  uplink->set_uplink("up0");
  uplink->mutable_total()->set_syscalls(5);
  auto* worker = stats.add_workers();
  worker->set_worker(0);
  worker->set_cpu(1);
  worker->set_busy_polls(6);
  auto* request = stats.mutable_control()->add_requests();
  request->set_method("xvio.v1.PortService/CreatePort");
  request->set_code("OK");
  request->set_count(7);
  stats.mutable_control()->set_port_count(1);
  v1::AgentInfo info;
  info.set_version("9.9.9");

  const std::string text = RenderPrometheus(stats, info);
  EXPECT_THAT(text, HasSubstr("xvio_port_rx_frames_total{port=\"vm\\\"1\\\\\"} 11\n"));
  EXPECT_THAT(text, HasSubstr("xvio_port_tx_bytes_total{port=\"vm\\\"1\\\\\"} 22\n"));
  EXPECT_THAT(text,
              HasSubstr("xvio_port_drops_total{port=\"vm\\\"1\\\\\",reason=\"no_rx_buffer\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("xvio_port_queue_kicks_total{port=\"vm\\\"1\\\\\",queue=\"1\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("xvio_uplink_syscalls_total{uplink=\"up0\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("xvio_worker_busy_polls_total{worker=\"0\",cpu=\"1\"} 6\n"));
  EXPECT_THAT(text, HasSubstr("xvio_grpc_requests_total{method=\"xvio.v1.PortService/"
                              "CreatePort\",code=\"OK\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("xvio_datapath_attached 1\n"));
  EXPECT_THAT(text, HasSubstr("xvio_ports 1\n"));
  EXPECT_THAT(text, HasSubstr("xvio_build_info{version=\"9.9.9\",kernel=\"\"} 1\n"));
  // Each family is introduced exactly once.
  const std::string type_line = "# TYPE xvio_port_rx_frames_total counter\n";
  const auto first = text.find(type_line);
  ASSERT_NE(first, std::string::npos);
  EXPECT_EQ(text.find(type_line, first + 1), std::string::npos);
  EXPECT_THAT(text, Not(HasSubstr("xvio_worker_polls_total{worker=\"0\",cpu=\"1\"} 6")));
}

// The uplink's offload counters, its per-queue block (with the owning
// worker) and the worker's uplink queues and drops, each under its name.
TEST(Metrics, RendersUplinkOffloadsQueuesAndWorkerDrops) {
  v1::Stats stats;
  auto* uplink = stats.add_uplinks();
  uplink->set_uplink("up0");
  uplink->mutable_offloads()->set_rx_checksums_valid(21);
  uplink->mutable_offloads()->set_rx_checksums_invalid(3);
  uplink->mutable_offloads()->set_rx_checksums_not_checked(2);
  uplink->mutable_offloads()->set_tx_frames_segmented(4);
  uplink->mutable_offloads()->set_tx_segments_produced(40);
  uplink->mutable_offloads()->set_tx_checksums_completed(5);
  uplink->mutable_offloads()->set_rx_partial_checksums_completed(7);
  uplink->mutable_offloads()->set_rx_partial_checksums_not_completed(1);
  auto* queue = uplink->add_queues();
  queue->set_queue(1);
  queue->set_worker(2);
  queue->mutable_counters()->set_rx_frames(17);
  (*queue->mutable_counters()->mutable_drops())["kernel_rx_ring_full"] = 6;
  auto* worker = stats.add_workers();
  worker->set_worker(2);
  worker->set_cpu(-1);
  worker->set_uplink("up0");
  worker->add_uplink_queues(1);
  (*worker->mutable_drops())["guest_ring_full"] = 8;

  const std::string text = RenderPrometheus(stats, v1::AgentInfo());
  for (const char* sample : {
           "xvio_uplink_rx_checksums_total{uplink=\"up0\",result=\"valid\"} 21\n",
           "xvio_uplink_rx_checksums_total{uplink=\"up0\",result=\"invalid\"} 3\n",
           "xvio_uplink_rx_checksums_total{uplink=\"up0\",result=\"not_checked\"} 2\n",
           "xvio_uplink_tx_frames_segmented_total{uplink=\"up0\"} 4\n",
           "xvio_uplink_tx_segments_produced_total{uplink=\"up0\"} 40\n",
           "xvio_uplink_tx_checksums_completed_total{uplink=\"up0\"} 5\n",
           "xvio_uplink_rx_partial_checksums_total{uplink=\"up0\",result=\"completed\"} 7\n",
           "xvio_uplink_rx_partial_checksums_total{uplink=\"up0\",result=\"not_completed\"} 1\n",
           "xvio_uplink_queue_rx_frames_total{uplink=\"up0\",queue=\"1\"} 17\n",
           "xvio_uplink_queue_drops_total{uplink=\"up0\",queue=\"1\",reason=\"kernel_rx_ring_"
           "full\"} 6\n",
           "xvio_uplink_queue_worker{uplink=\"up0\",queue=\"1\"} 2\n",
           "xvio_worker_uplink_queue_info{worker=\"2\",uplink=\"up0\",queue=\"1\"} 1\n",
           "xvio_worker_drops_total{worker=\"2\",cpu=\"-1\",reason=\"guest_ring_full\"} 8\n",
       }) {
    EXPECT_THAT(text, HasSubstr(sample));
  }
  const std::string type_line = "# TYPE xvio_uplink_rx_checksums_total counter\n";
  const auto first = text.find(type_line);
  ASSERT_NE(first, std::string::npos);
  EXPECT_EQ(text.find(type_line, first + 1), std::string::npos);
}

}  // namespace
}  // namespace xvio::control
