// Benchmark: frames per second and Gbit/s through two vhost-user ports
// patched back to back, xvio (xvio-vhost-patch) side by side with DPDK's own
// vhost back-end (dpdk-testpmd with two net_vhost ports in io forwarding),
// same load, same run, on the 2-core method of DESIGN.md:
//   CPU 1: the back-end's datapath thread, alone (xvio's patch worker,
//          `--cpu 1`; testpmd's forwarding lcore, `--lcores 0@1,1@1`).
//   CPU 0: one dpdk-testpmd with two net_virtio_user ports in io forwarding,
//          started with tx_first so a fixed population of frames circulates
//          generator -> back-end -> generator; one busy-poller only, so the
//          back-end is the bottleneck, not the scheduler.
// Placement of the back-ends' other threads (xvio's stats writer and
// vhost-user control threads, testpmd's control threads):
//   --placement split (default): the back-end may use CPUs 0 and 1 and
//          places them itself, off its datapath CPU (xvio-vhost-patch
//          --cpu does; DPDK puts control threads on the CPUs its lcores
//          leave free), so they share CPU 0 with the generator;
//   --placement whole: the whole back-end process is confined to CPU 1.
// The rate is the sum of frames received on both generator ports: every
// frame counted crossed the back-end once.
//
//   vhost_patch_bench [--seconds S] [--runs N] [--sizes 64,1500,...]
//                     [--backends xvio,xvio-busy,dpdk] [--queue-size Q] [--bursts B]
//                     [--placement split|whole] [--xvio-binary PATH] [--perf-dir DIR]
//   vhost_patch_bench --rtt-monitor SECONDS   (only the CPU 0 <-> 1 round trip, every 15 s)
// --perf-dir records a cpu-clock profile of the generator and of the
// back-end over each measured window (perf record, 999 Hz), one file each.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
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

extern char** environ;

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
  // Frames the back-end discarded over the whole run (DPDK: its io
  // forwarding's TX-dropped when a guest receive ring is full; xvio: frames
  // dropped as malformed, too large or without a running peer). Together
  // with generator_dropped: how far the population in flight shrank.
  uint64_t backend_dropped = 0;
  // Involuntary context switches over the window: how often the scheduler
  // took the CPU away from the generator / the back-end (all its threads) /
  // the back-end's datapath thread (the one that used the most CPU).
  uint64_t generator_preempted = 0;
  uint64_t backend_preempted = 0;
  uint64_t datapath_preempted = 0;
  // Cache-line round trip between CPU 0 and CPU 1 just before and just
  // after the run (see CrossCpuRoundTripNs).
  double round_trip_before_ns = 0;
  double round_trip_after_ns = 0;
};

struct Settings {
  int seconds = 5;
  int runs = 3;
  std::vector<int> sizes = {64, 1500, 9000};
  std::vector<std::string> backends = {"xvio", "xvio-busy", "dpdk"};
  int queue_size = 1024;
  int bursts = 16;                     // tx_first bursts of 32 per port: frames in flight
  bool whole_backend_on_cpu1 = false;  // --placement whole
  std::string xvio_binary = XVIO_VHOST_PATCH_BINARY;
  std::string perf_dir;  // empty: no profiles
};

// utime + stime from a /proc stat file (a process: all its threads).
uint64_t CpuTicks(const std::string& stat_path) {
  std::ifstream stat(stat_path);
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

uint64_t CpuTicks(pid_t pid) {
  return CpuTicks("/proc/" + std::to_string(pid) + "/stat");
}

// Per thread of a process: CPU ticks used and involuntary context switches.
struct ThreadSample {
  uint64_t ticks = 0;
  uint64_t preempted = 0;
};
std::map<std::string, ThreadSample> SampleThreads(pid_t pid) {
  std::map<std::string, ThreadSample> threads;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& task : std::filesystem::directory_iterator(tasks)) {
    ThreadSample& sample = threads[task.path().filename()];
    sample.ticks = CpuTicks(task.path() / "stat");
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
        sample.preempted = std::stoull(line.substr(line.find(':') + 1));
    }
  }
  return threads;
}

// Preemptions between two samples: all threads, and the busiest thread's.
void Preemptions(const std::map<std::string, ThreadSample>& before,
                 const std::map<std::string, ThreadSample>& after, uint64_t& all_threads,
                 uint64_t& busiest_thread) {
  all_threads = busiest_thread = 0;
  uint64_t busiest_ticks = 0;
  for (const auto& [thread, end] : after) {
    const auto start = before.find(thread);
    const ThreadSample begin = start == before.end() ? ThreadSample{} : start->second;
    all_threads += end.preempted - begin.preempted;
    if (end.ticks - begin.ticks >= busiest_ticks) {
      busiest_ticks = end.ticks - begin.ticks;
      busiest_thread = end.preempted - begin.preempted;
    }
  }
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

// Runs the calling thread on `cpus` while alive, then restores its CPUs. A
// process started meanwhile inherits `cpus` for all of its threads.
class ScopedAffinity {
 public:
  explicit ScopedAffinity(std::initializer_list<int> cpus) {
    sched_getaffinity(0, sizeof saved_, &saved_);
    cpu_set_t only;
    CPU_ZERO(&only);
    for (int cpu : cpus)
      CPU_SET(cpu, &only);
    sched_setaffinity(0, sizeof only, &only);
  }
  ~ScopedAffinity() { sched_setaffinity(0, sizeof saved_, &saved_); }
  ScopedAffinity(const ScopedAffinity&) = delete;
  ScopedAffinity& operator=(const ScopedAffinity&) = delete;

 private:
  cpu_set_t saved_;
};

// Typical time for a cache line to go from CPU 0 to CPU 1 and back (10th
// percentile of 20000 round trips, so preemptions do not count). Every
// frame crosses between the generator's CPU and the back-end's several times
// (descriptors, ring indexes, frame bytes), so this bounds both back-ends.
// On a VM it is not a constant: the hypervisor may run the two vCPUs on
// cores sharing a cache or on different dies, and moves them over time.
double CrossCpuRoundTripNs() {
  constexpr int kRoundTrips = 20000;
  alignas(64) std::atomic<int> ball{0};
  auto pin = [](int cpu) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(cpu, &cpus);
    pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
  };
  std::thread partner([&] {
    pin(1);
    for (int i = 0; i < kRoundTrips; ++i) {
      while (ball.load(std::memory_order_acquire) != 1) {
      }
      ball.store(0, std::memory_order_release);
    }
  });
  cpu_set_t saved;
  pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved);
  pin(0);
  std::vector<std::chrono::steady_clock::duration> round_trips(kRoundTrips);
  for (int i = 0; i < kRoundTrips; ++i) {
    const auto start = std::chrono::steady_clock::now();
    ball.store(1, std::memory_order_release);
    while (ball.load(std::memory_order_acquire) != 0) {
    }
    round_trips[i] = std::chrono::steady_clock::now() - start;
  }
  partner.join();
  pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
  std::nth_element(round_trips.begin(), round_trips.begin() + kRoundTrips / 10, round_trips.end());
  return std::chrono::duration<double, std::nano>(round_trips[kRoundTrips / 10]).count();
}

// Starts a helper program (perf) with its output discarded; -1 on failure.
pid_t StartProcess(const std::vector<std::string>& arguments) {
  std::vector<char*> argv;
  for (const std::string& argument : arguments)
    argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  if (posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0)
    pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

uint64_t TotalRxPackets(TestpmdProcess& generator) {
  return generator.PortStats(0).rx_packets + generator.PortStats(1).rx_packets;
}

Sample Measure(const Settings& settings, const std::string& backend, int frame_bytes, int run) {
  // Sockets and the stats file on a tmpfs, rewritten once a second: a disk
  // file rewritten 20 times a second cost the datapath CPU block-I/O
  // completions and RCU work (perf sched: ~60 preemptions a second).
  TempDir directory("/dev/shm");
  const std::string socket_a = directory.path() + "/a.sock";
  const std::string socket_b = directory.path() + "/b.sock";
  std::unique_ptr<PatchProcess> xvio;
  std::unique_ptr<TestpmdProcess> dpdk;
  pid_t backend_pid = -1;
  // mbuf size goes before --txpkts: testpmd checks segment sizes as it parses.
  const std::string mbufs = "--mbuf-size=" + std::to_string(std::max(2048, frame_bytes + 256)) +
                            " --max-pkt-len=" + std::to_string(std::max(1518, frame_bytes)) +
                            " --total-num-mbufs=" + (frame_bytes > 9000 ? "4096" : "8192");
  // The back-end's datapath goes to CPU 1 either way; see --placement for
  // its other threads.
  std::optional<ScopedAffinity> on_backend_cpus;
  if (settings.whole_backend_on_cpu1)
    on_backend_cpus.emplace(std::initializer_list<int>{1});
  else
    on_backend_cpus.emplace(std::initializer_list<int>{0, 1});
  if (backend == "xvio" || backend == "xvio-busy") {
    // xvio: adaptive (sleeps on kicks after 200 us without work, the
    // default); xvio-busy: never sleeps while traffic runs, like DPDK.
    xvio = std::make_unique<PatchProcess>(
        settings.xvio_binary, directory.path(),
        backend == "xvio" ? "--cpu 1" : "--cpu 1 --idle-poll-us 10000000", 1000);
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
  on_backend_cpus.reset();
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
  const auto generator_threads0 = SampleThreads(generator.pid());
  const auto backend_threads0 = SampleThreads(backend_pid);
  std::vector<pid_t> profilers;
  if (!settings.perf_dir.empty()) {
    const std::string name = settings.perf_dir + "/" + std::to_string(frame_bytes) + "-" + backend +
                             "-" + std::to_string(run);
    for (const auto& [role, pid] : {std::pair{"gen", generator.pid()}, {"be", backend_pid}}) {
      profilers.push_back(StartProcess(
          {"perf", "record", "-q", "-F", "999", "-e", "cpu-clock", "-p", std::to_string(pid), "-o",
           name + "-" + role + ".data", "--", "sleep", std::to_string(settings.seconds)}));
    }
  }
  std::this_thread::sleep_for(std::chrono::seconds(settings.seconds));
  const uint64_t packets1 = TotalRxPackets(generator);
  const uint64_t bytes1 = generator.TotalRxBytes();
  const uint64_t ticks1 = CpuTicks(backend_pid);
  const auto generator_threads1 = SampleThreads(generator.pid());
  const auto backend_threads1 = SampleThreads(backend_pid);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Sample sample;
  sample.generator_dropped = ForwardDrops(generator);
  if (dpdk) {
    sample.backend_dropped = ForwardDrops(*dpdk);
  } else {
    sample.backend_dropped = xvio->Counter("a.dropped") + xvio->Counter("b.dropped") +
                             xvio->Counter("patch.dropped_no_peer");
  }
  uint64_t ignored = 0;
  Preemptions(generator_threads0, generator_threads1, sample.generator_preempted, ignored);
  Preemptions(backend_threads0, backend_threads1, sample.backend_preempted,
              sample.datapath_preempted);
  for (pid_t profiler : profilers) {
    if (profiler > 0)
      waitpid(profiler, nullptr, 0);
  }
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
  int rtt_monitor_seconds = 0;
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
    else if (flag == "--placement" && (value == "split" || value == "whole"))
      settings.whole_backend_on_cpu1 = value == "whole";
    else if (flag == "--xvio-binary")
      settings.xvio_binary = value;
    else if (flag == "--perf-dir")
      settings.perf_dir = value;
    else if (flag == "--rtt-monitor")
      rtt_monitor_seconds = std::stoi(value);
    else if (flag == "--sizes") {
      settings.sizes.clear();
      for (const std::string& size : SplitCommas(value))
        settings.sizes.push_back(std::stoi(size));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (rtt_monitor_seconds > 0) {
    // How the hypervisor places the two vCPUs over time (no traffic).
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(rtt_monitor_seconds);
    while (std::chrono::steady_clock::now() < end) {
      const std::time_t now = std::time(nullptr);
      char stamp[16];
      std::strftime(stamp, sizeof(stamp), "%H:%M:%S", std::gmtime(&now));
      std::printf("%s UTC rtt-ns %.0f\n", stamp, CrossCpuRoundTripNs());
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::seconds(15));
    }
    return 0;
  }
  std::printf("# %d runs x %d s, queue_size %d, %d bursts of 32 in flight per port, placement %s\n",
              settings.runs, settings.seconds, settings.queue_size, settings.bursts,
              settings.whole_backend_on_cpu1 ? "whole" : "split");
  std::printf("# xvio: %s\n", settings.xvio_binary.c_str());
  std::printf("%-6s %-9s %4s %10s %10s %12s %10s %10s %11s %10s %10s %11s\n", "bytes", "backend",
              "run", "Mpps", "Gbit/s", "backend-CPU%", "gen-drops", "be-drops", "gen-preempt",
              "be-preempt", "dp-preempt", "rtt-ns");
  std::map<std::pair<int, std::string>, std::vector<Sample>> samples;
  for (int size : settings.sizes) {
    for (int run = 0; run < settings.runs; ++run) {
      // Interleave back-ends so both see the same machine conditions.
      for (const std::string& backend : settings.backends) {
        Sample sample;
        const double round_trip_before_ns = CrossCpuRoundTripNs();
        try {
          sample = Measure(settings, backend, size, run);
        } catch (const std::exception& error) {
          std::fprintf(stderr, "%s %d B run %d failed: %s\n", backend.c_str(), size, run,
                       error.what());
        }
        sample.round_trip_before_ns = round_trip_before_ns;
        sample.round_trip_after_ns = CrossCpuRoundTripNs();
        samples[{size, backend}].push_back(sample);
        std::printf(
            "%-6d %-9s %4d %10.3f %10.2f %12.0f %10llu %10llu %11llu %10llu %10llu %5.0f/%-5.0f\n",
            size, backend.c_str(), run, sample.mpps, sample.gbps, sample.backend_cpu_percent,
            static_cast<unsigned long long>(sample.generator_dropped),
            static_cast<unsigned long long>(sample.backend_dropped),
            static_cast<unsigned long long>(sample.generator_preempted),
            static_cast<unsigned long long>(sample.backend_preempted),
            static_cast<unsigned long long>(sample.datapath_preempted), sample.round_trip_before_ns,
            sample.round_trip_after_ns);
        std::fflush(stdout);
      }
    }
  }
  std::printf("\n# medians\n%-6s %-9s %10s %10s %12s\n", "bytes", "backend", "Mpps", "Gbit/s",
              "backend-CPU%");
  for (const auto& [key, values] : samples) {
    std::vector<double> mpps, gbps, cpu;
    for (const Sample& sample : values) {
      mpps.push_back(sample.mpps);
      gbps.push_back(sample.gbps);
      cpu.push_back(sample.backend_cpu_percent);
    }
    std::printf("%-6d %-9s %10.3f %10.2f %12.0f\n", key.first, key.second.c_str(), Median(mpps),
                Median(gbps), Median(cpu));
  }
  return 0;
}
