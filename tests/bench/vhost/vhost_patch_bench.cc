// Benchmark: frames per second and Gbit/s through two vhost-user ports
// patched back to back, xvio (xvio-vhost-patch) side by side with DPDK's own
// vhost back-end (dpdk-testpmd with two net_vhost ports in io forwarding),
// same load, same run, on the 2-core method of DESIGN.md:
//   CPU 1: the back-end under test, alone: its whole process (xvio's worker
//          and helper threads / testpmd's lcores and control threads).
//   CPU 0: one dpdk-testpmd with two net_virtio_user ports in io forwarding,
//          started with tx_first so a fixed population of frames circulates
//          generator -> back-end -> generator; one busy-poller only, so the
//          back-end is the bottleneck, not the scheduler.
// The rate is the sum of frames received on both generator ports: every
// frame counted crossed the back-end once.
//
//   vhost_patch_bench [--seconds S] [--runs N] [--sizes 64,1500,...]
//                     [--backends xvio,xvio-busy,dpdk] [--queue-size Q] [--bursts B]
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/vhost/process_harness.h"

namespace {

using xvio::testing::PatchProcess;
using xvio::testing::TempDir;
using xvio::testing::TestpmdOptions;
using xvio::testing::TestpmdProcess;
using xvio::testing::WaitUntil;

struct Sample {
  double mpps = 0;
  double gbps = 0;
  double backend_cpu_percent = 0;
  // Frames the generator's io forwarding could not hand back to a port over
  // the whole run (testpmd "TX-dropped"): each one leaves the fixed
  // population of frames in flight for good.
  uint64_t generator_dropped = 0;
  // Involuntary context switches over the window: how often the scheduler
  // took the CPU away from the generator / the back-end.
  uint64_t generator_preempted = 0;
  uint64_t backend_preempted = 0;
};

struct Settings {
  int seconds = 5;
  int runs = 3;
  std::vector<int> sizes = {64, 1500, 9000};
  std::vector<std::string> backends = {"xvio", "xvio-busy", "dpdk"};
  int queue_size = 1024;
  int bursts = 16;  // tx_first bursts of 32 per port: frames in flight
};

uint64_t CpuTicks(pid_t pid) {
  // utime + stime of the whole process, including all threads.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t close_paren = content.rfind(')');
  std::istringstream fields(content.substr(close_paren + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int index = 3; fields >> field; ++index) {
    if (index == 14)
      utime = std::stoull(field);
    if (index == 15) {
      stime = std::stoull(field);
      break;
    }
  }
  return utime + stime;
}

// Sum of nonvoluntary_ctxt_switches over every thread of a process.
uint64_t Preemptions(pid_t pid) {
  uint64_t total = 0;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& task : std::filesystem::directory_iterator(tasks)) {
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
        total += std::stoull(line.substr(line.find(':') + 1));
    }
  }
  return total;
}

// testpmd's accumulated "TX-dropped" over all ports (the last one printed).
uint64_t ForwardDrops(TestpmdProcess& testpmd) {
  const std::string output = testpmd.Command("show fwd stats all");
  static const std::regex dropped("TX-dropped:\\s*(\\d+)");
  uint64_t last = 0;
  for (auto it = std::sregex_iterator(output.begin(), output.end(), dropped);
       it != std::sregex_iterator(); ++it) {
    last = std::stoull((*it)[1]);
  }
  return last;
}

// Runs the calling thread on `cpu` while alive, then restores its CPUs. A
// process started meanwhile inherits `cpu` for all of its threads.
class ScopedAffinity {
 public:
  explicit ScopedAffinity(int cpu) {
    sched_getaffinity(0, sizeof saved_, &saved_);
    cpu_set_t only;
    CPU_ZERO(&only);
    CPU_SET(cpu, &only);
    sched_setaffinity(0, sizeof only, &only);
  }
  ~ScopedAffinity() { sched_setaffinity(0, sizeof saved_, &saved_); }
  ScopedAffinity(const ScopedAffinity&) = delete;
  ScopedAffinity& operator=(const ScopedAffinity&) = delete;

 private:
  cpu_set_t saved_;
};

uint64_t TotalRxPackets(TestpmdProcess& generator) {
  return generator.PortStats(0).rx_packets + generator.PortStats(1).rx_packets;
}

Sample Measure(const Settings& settings, const std::string& backend, int frame_bytes) {
  TempDir directory;
  const std::string socket_a = directory.path() + "/a.sock";
  const std::string socket_b = directory.path() + "/b.sock";
  std::unique_ptr<PatchProcess> xvio;
  std::unique_ptr<TestpmdProcess> dpdk;
  pid_t backend_pid = -1;
  // mbuf size goes before --txpkts: testpmd checks segment sizes as it parses.
  const std::string mbufs = "--mbuf-size=" + std::to_string(std::max(2048, frame_bytes + 256)) +
                            " --max-pkt-len=" + std::to_string(std::max(1518, frame_bytes)) +
                            " --total-num-mbufs=" + (frame_bytes > 9000 ? "4096" : "8192");
  // The whole back-end process starts on CPU 1, not only its worker: helper
  // threads (xvio's stats writer and vhost-user threads, DPDK's control
  // threads) must not share CPU 0 with the generator's busy-polling lcore.
  std::optional<ScopedAffinity> on_backend_cpu(std::in_place, 1);
  if (backend == "xvio" || backend == "xvio-busy") {
    // xvio: adaptive (sleeps on kicks after 200 us without work, the
    // default); xvio-busy: never sleeps while traffic runs, like DPDK.
    xvio = std::make_unique<PatchProcess>(
        XVIO_VHOST_PATCH_BINARY, directory.path(),
        backend == "xvio" ? "--cpu 1" : "--cpu 1 --idle-poll-us 10000000");
    backend_pid = xvio->pid();
  } else {
    TestpmdOptions options;
    options.vdevs = {"net_vhost0,iface=" + socket_a + ",queues=1",
                     "net_vhost1,iface=" + socket_b + ",queues=1"};
    options.forward_mode = "io";
    options.lcores = "0@1,1@1";  // forwarding lcore alone on CPU 1 (main lcore sleeps)
    options.forward_queues_args = false;
    options.memory_mb = 1024;
    options.extra_app_args = mbufs;
    options.log_path = "/dev/null";
    dpdk = std::make_unique<TestpmdProcess>(options);
    dpdk->Command("start");
    backend_pid = dpdk->pid();
  }
  on_backend_cpu.reset();
  TestpmdOptions generator_options;
  const std::string ring = ",queue_size=" + std::to_string(settings.queue_size);
  generator_options.vdevs = {"net_virtio_user0,path=" + socket_a + ring,
                             "net_virtio_user1,path=" + socket_b + ring};
  generator_options.forward_mode = "io";
  generator_options.lcores = "0@0,1@0";
  generator_options.forward_queues_args = false;
  generator_options.memory_mb = 1024;
  generator_options.extra_app_args = mbufs + " --txpkts=" + std::to_string(frame_bytes);
  generator_options.log_path = "/dev/null";
  TestpmdProcess generator(generator_options);
  if (xvio) {
    WaitUntil(
        [&] {
          return xvio->Counter("a.ready_queues") == 2 && xvio->Counter("b.ready_queues") == 2;
        },
        std::chrono::seconds(30));
  }
  generator.Command("start tx_first " + std::to_string(settings.bursts));
  std::this_thread::sleep_for(std::chrono::seconds(1));  // warm-up (fixed duration by design)

  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t packets0 = TotalRxPackets(generator);
  const uint64_t bytes0 = generator.TotalRxBytes();
  const uint64_t ticks0 = CpuTicks(backend_pid);
  const uint64_t generator_preempted0 = Preemptions(generator.pid());
  const uint64_t backend_preempted0 = Preemptions(backend_pid);
  std::this_thread::sleep_for(std::chrono::seconds(settings.seconds));
  const uint64_t packets1 = TotalRxPackets(generator);
  const uint64_t bytes1 = generator.TotalRxBytes();
  const uint64_t ticks1 = CpuTicks(backend_pid);
  const uint64_t generator_preempted1 = Preemptions(generator.pid());
  const uint64_t backend_preempted1 = Preemptions(backend_pid);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Sample sample;
  sample.generator_dropped = ForwardDrops(generator);
  sample.generator_preempted = generator_preempted1 - generator_preempted0;
  sample.backend_preempted = backend_preempted1 - backend_preempted0;
  generator.Command("stop");

  sample.mpps = static_cast<double>(packets1 - packets0) / elapsed / 1e6;
  sample.gbps = static_cast<double>(bytes1 - bytes0) * 8 / elapsed / 1e9;
  sample.backend_cpu_percent = 100.0 * static_cast<double>(ticks1 - ticks0) /
                               static_cast<double>(sysconf(_SC_CLK_TCK)) / elapsed;
  return sample;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');)
    parts.push_back(part);
  return parts;
}

}  // namespace

int main(int argc, char** argv) {
  Settings settings;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--seconds")
      settings.seconds = std::stoi(value);
    else if (flag == "--runs")
      settings.runs = std::stoi(value);
    else if (flag == "--queue-size")
      settings.queue_size = std::stoi(value);
    else if (flag == "--bursts")
      settings.bursts = std::stoi(value);
    else if (flag == "--backends")
      settings.backends = SplitCommas(value);
    else if (flag == "--sizes") {
      settings.sizes.clear();
      for (const std::string& size : SplitCommas(value))
        settings.sizes.push_back(std::stoi(size));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  std::printf("# %d runs x %d s, queue_size %d, %d bursts of 32 in flight per port\n",
              settings.runs, settings.seconds, settings.queue_size, settings.bursts);
  std::printf("%-6s %-8s %4s %10s %10s %12s %10s %10s %10s\n", "bytes", "backend", "run", "Mpps",
              "Gbit/s", "backend-CPU%", "gen-drops", "gen-preempt", "be-preempt");
  std::map<std::pair<int, std::string>, std::vector<Sample>> samples;
  for (int size : settings.sizes) {
    for (int run = 0; run < settings.runs; ++run) {
      // Interleave back-ends so both see the same machine conditions.
      for (const std::string& backend : settings.backends) {
        Sample sample;
        try {
          sample = Measure(settings, backend, size);
        } catch (const std::exception& error) {
          std::fprintf(stderr, "%s %d B run %d failed: %s\n", backend.c_str(), size, run,
                       error.what());
        }
        samples[{size, backend}].push_back(sample);
        std::printf("%-6d %-8s %4d %10.3f %10.2f %12.0f %10llu %10llu %10llu\n", size,
                    backend.c_str(), run, sample.mpps, sample.gbps, sample.backend_cpu_percent,
                    static_cast<unsigned long long>(sample.generator_dropped),
                    static_cast<unsigned long long>(sample.generator_preempted),
                    static_cast<unsigned long long>(sample.backend_preempted));
        std::fflush(stdout);
      }
    }
  }
  std::printf("\n# medians\n%-6s %-8s %10s %10s %12s\n", "bytes", "backend", "Mpps", "Gbit/s",
              "backend-CPU%");
  for (const auto& [key, values] : samples) {
    std::vector<double> mpps, gbps, cpu;
    for (const Sample& sample : values) {
      mpps.push_back(sample.mpps);
      gbps.push_back(sample.gbps);
      cpu.push_back(sample.backend_cpu_percent);
    }
    std::printf("%-6d %-8s %10.3f %10.2f %12.0f\n", key.first, key.second.c_str(), Median(mpps),
                Median(gbps), Median(cpu));
  }
  return 0;
}
