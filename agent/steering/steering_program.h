// The loader and map owner of the XDP steering program (bpf/xvio_steer.bpf.c):
// open, adopt pinned maps, load, attach through libxdp, and the typed map
// operations the agent needs (ports, AF_XDP sockets, config, counters).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/steering/port_index.h"
#include "agent/steering/toeplitz.h"
#include "bpf/xvio_shared.h"

struct xvio_steer;
struct xdp_program;

namespace xvio::steering {

using MacAddress = std::array<std::uint8_t, 6>;

// "02:00:00:00:00:01" -> bytes; an error names the bad input.
absl::StatusOr<MacAddress> ParseMacAddress(std::string_view text);
std::string FormatMacAddress(const MacAddress& mac);

struct SteeringOptions {
  // bpffs directory for the maps (e.g. /sys/fs/bpf/xvio). Maps already pinned
  // there are adopted, so a restarted agent keeps ports, sockets, config and
  // counters; the others are pinned there after load. Empty: no pinning.
  std::string pin_directory;
  // Load xvio_steer_frags (BPF_F_XDP_HAS_FRAGS) instead of xvio_steer, for
  // uplinks whose MTU needs multi-buffer frames.
  bool multi_buffer = false;
};

enum class XdpMode { kNative, kSkb };
std::string_view XdpModeName(XdpMode mode);

// What Attach achieved.
struct AttachResult {
  XdpMode mode = XdpMode::kNative;  // as the kernel reports it after attaching
  // Why native mode was not used (empty when it was): the driver has no
  // native XDP, or refused this program.
  std::string native_attach_error;
  // True when libxdp's multi-program dispatcher runs the program; false when
  // libxdp attached it alone (it falls back when the dispatcher cannot load,
  // e.g. without CAP_PERFMON, or when the program was loaded beforehand).
  bool dispatcher = false;
  // AdoptAttached only: the id of a program of an older xvio (pins without
  // xvio_port_index) that this one replaced in place; 0 when the running
  // program was adopted as it was.
  std::uint32_t replaced_program_id = 0;
};

// Defaults written into fresh (not adopted) maps at load: every hash type but
// the _EX ones, Microsoft RSS key, one socket per queue, broadcast, multicast
// and unknown unicast to the host, malformed frames for ports dropped.
xvio_config DefaultSteeringConfig();

// Not thread-safe as an object (one owner, the agent's control thread); the
// map operations are single syscalls and take effect for the next frame.
class SteeringProgram {
 public:
  // Opens the embedded BPF object and adopts pinned maps (nothing is loaded
  // into the kernel yet).
  static absl::StatusOr<std::unique_ptr<SteeringProgram>> Open(const SteeringOptions& options);
  ~SteeringProgram();
  SteeringProgram(const SteeringProgram&) = delete;
  SteeringProgram& operator=(const SteeringProgram&) = delete;

  // Loads the program and maps into the kernel, pins new maps and writes the
  // default config into fresh ones. Needed before map operations or test runs.
  // Attach() loads by itself if this was not called, which lets libxdp load the
  // program as a dispatcher component; loading first forces single-program mode.
  absl::Status Load();

  // Attaches to `ifindex` (in the calling thread's network namespace) in
  // native mode; when that fails and `allow_skb_fallback`, in skb (generic)
  // mode. Fails if already attached. Until ports and sockets are set, the
  // program passes every frame to the host, so attaching first is safe.
  // `skb_only` skips native mode and attaches in skb mode at once.
  absl::StatusOr<AttachResult> Attach(int ifindex, bool allow_skb_fallback = true,
                                      bool skb_only = false);
  // Takes over a steering program that a previous agent left attached to
  // `ifindex`: one whose xskmap is the map adopted from the pin directory.
  // The program (and its id) stays as it is; this object loads a copy only
  // to own the maps, and Detach() detaches the adopted program. Returns
  // nullopt when no such program is attached (then Attach() as usual).
  //
  // Pins of an xvio from before the port index (the other five maps, no
  // xvio_port_index) belong to a program that does not know the index, so
  // that program is upgraded instead: this object's program is loaded over
  // the five adopted maps and a new, pinned index filled from xvio_ports,
  // and replaces the running one atomically (XDP_FLAGS_REPLACE: the
  // interface is never without a program, frames see the old or the new
  // one, both steering with the same maps); `replaced_program_id` says so.
  // That needs the program attached alone (libxdp's legacy mode, as on
  // kernels where the dispatcher cannot load); inside libxdp's
  // multi-program dispatcher the upgrade is refused with
  // FAILED_PRECONDITION saying what to run.
  absl::StatusOr<std::optional<AttachResult>> AdoptAttached(int ifindex);
  // Detaches from the interface Attach() used; no-op when not attached.
  absl::Status Detach();
  // Forgets the attachment without detaching: the program keeps running on
  // the interface after this object is gone (for a restarted agent to adopt).
  void LeaveAttached() { attached_ifindex_ = 0; }
  // Removes the map pins from the pin directory, and the directory when it
  // is then empty. The maps live on while something still uses them.
  absl::Status RemovePins();
  // Kernel ids of the attached program (0 when not attached) and of the xskmap.
  std::uint32_t attached_program_id() const { return attached_program_id_; }
  std::uint32_t xsks_map_id() const;

  bool loaded() const { return loaded_; }
  // Names of the maps adopted from the pin directory at Open().
  const std::vector<std::string>& adopted_maps() const { return adopted_maps_; }
  // The fd of the loaded program (for bpf_prog_test_run_opts).
  int program_fd() const;

  // Port map: frames for `mac` on outer VLAN `vlan_id` (0 = untagged) go to `port_id`.
  // `flags` are XVIO_PORT_FLAG_*. Both also keep the program's port index
  // (xvio_port_index) in line, so write ports only through these two.
  absl::Status UpsertPort(const MacAddress& mac, std::uint16_t vlan_id, std::uint32_t port_id,
                          std::uint32_t flags = 0);
  absl::Status DeletePort(const MacAddress& mac, std::uint16_t vlan_id);

  // AF_XDP socket map: slot = rx queue * sockets_per_queue + hash % sockets_per_queue.
  absl::Status SetSocket(std::uint32_t slot, int xsk_fd);
  absl::Status ClearSocket(std::uint32_t slot);

  absl::StatusOr<xvio_config> ReadConfig() const;
  absl::Status WriteConfig(const xvio_config& config);
  // Rebuilds the Toeplitz table from `key` and records the key in the config.
  // The 36 KiB table is replaced in one map update that is not atomic for
  // readers: frames hashed during it may get a mix of old and new key.
  absl::Status SetHashKey(const ToeplitzKey& key);
  absl::Status SetSymmetricHash(bool symmetric);
  absl::Status SetHashFields(std::uint32_t hash_fields);
  absl::Status SetActions(xvio_action broadcast, xvio_action multicast, xvio_action unknown_unicast,
                          xvio_action malformed);
  absl::Status SetSocketsPerQueue(std::uint32_t sockets_per_queue);

  // Counters summed over CPUs, indexed by enum xvio_counter.
  using Counters = std::array<std::uint64_t, XVIO_COUNTER_COUNT>;
  absl::StatusOr<Counters> ReadCounters() const;

  // Map fds (valid after Load/Attach), e.g. for xsk_socket__update_xskmap.
  int ports_map_fd() const;
  int xsks_map_fd() const;
  int config_map_fd() const;
  int toeplitz_map_fd() const;
  int counters_map_fd() const;
  int port_index_map_fd() const;
  // Port entries only the port map holds (their index window was full);
  // frames for them cost the program a hash map lookup.
  std::size_t port_index_overflowed() const;

 private:
  SteeringProgram() = default;
  absl::Status AdoptPinnedMaps();
  bool Adopted(std::string_view map_name) const;
  // AdoptAttached for a program that predates the port index (see there).
  absl::StatusOr<std::optional<AttachResult>> ReplaceOlderProgram(int ifindex,
                                                                  std::uint32_t older_id,
                                                                  XdpMode mode, bool legacy);
  absl::Status AfterLoad();
  // Maps xvio_port_index and reconciles it with the port map.
  absl::Status SetUpPortIndex();
  absl::Status RequireLoaded(std::string_view operation) const;

  SteeringOptions options_;
  xvio_steer* skeleton_ = nullptr;
  xdp_program* xdp_program_ = nullptr;
  bool loaded_ = false;
  int attached_ifindex_ = 0;
  XdpMode attached_mode_ = XdpMode::kNative;
  std::uint32_t attached_program_id_ = 0;
  // The program a previous agent attached, when AdoptAttached() found one.
  xdp_program* adopted_program_ = nullptr;
  std::vector<std::string> adopted_maps_;
  // The mmapped xvio_port_index (XVIO_PORT_INDEX_SLOTS slots) and its writer.
  void* port_index_memory_ = nullptr;
  std::unique_ptr<PortIndex> port_index_;
};

// "received", "parse_error_ipv4_bad_ihl", ...: stable names for metrics.
std::string_view CounterName(std::uint32_t counter);

}  // namespace xvio::steering
