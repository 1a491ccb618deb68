// SteeringProgram: libbpf skeleton + libxdp attach + typed map access (see the header).
#include "agent/steering/steering_program.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xdp/libxdp.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "xvio_steer.skel.h"

namespace xvio::steering {
namespace {

absl::StatusCode CodeForErrno(int error_number) {
  switch (error_number) {
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case ENOENT:
    case ENODEV:
      return absl::StatusCode::kNotFound;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case EBUSY:
      return absl::StatusCode::kFailedPrecondition;
    case E2BIG:
    case ENOSPC:
    case ENOMEM:
      return absl::StatusCode::kResourceExhausted;
    case EINVAL:
      return absl::StatusCode::kInvalidArgument;
    case EOPNOTSUPP:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

// `what` failed with errno `error_number` (positive or negative).
absl::Status ErrnoError(int error_number, const std::string& what) {
  if (error_number < 0)
    error_number = -error_number;
  return absl::Status(
      CodeForErrno(error_number),
      what + ": " + std::strerror(error_number) + " (errno " + std::to_string(error_number) + ")");
}

absl::Status LibxdpError(int error, const std::string& what) {
  char text[256] = {};
  libxdp_strerror(error, text, sizeof(text));
  if (error < 0)
    error = -error;
  return absl::Status(CodeForErrno(error), what + ": " + text);
}

bool PathExists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

// The maps in the order of the shared header, for adoption and pinning.
std::vector<bpf_map*> AllMaps(xvio_steer* skeleton) {
  return {skeleton->maps.xvio_ports,    skeleton->maps.xvio_xsks,
          skeleton->maps.xvio_config,   skeleton->maps.xvio_toeplitz,
          skeleton->maps.xvio_counters, skeleton->maps.xvio_port_index};
}

constexpr std::array<std::string_view, XVIO_COUNTER_COUNT> kCounterNames = {
    "received",
    "redirected",
    "passed",
    "dropped",
    "broadcast",
    "multicast",
    "unknown_unicast",
    "port_disabled",
    "no_socket",
    "no_config",
    "metadata_unsupported",
    "malformed",
    "parse_error_ethernet_truncated",
    "parse_error_vlan_truncated",
    "parse_error_too_many_vlan_tags",
    "parse_error_arp_truncated",
    "parse_error_ipv4_truncated",
    "parse_error_ipv4_bad_version",
    "parse_error_ipv4_bad_ihl",
    "parse_error_ipv4_bad_total_length",
    "parse_error_ipv6_truncated",
    "parse_error_ipv6_bad_version",
    "parse_error_ipv6_bad_payload_length",
    "parse_error_ipv6_ext_truncated",
    "parse_error_ipv6_too_many_ext_headers",
    "parse_error_tcp_truncated",
    "parse_error_tcp_bad_data_offset",
    "parse_error_udp_truncated",
    "parse_error_icmp_truncated",
    "parse_error_icmpv6_truncated",
};
static_assert(XVIO_COUNTER_PARSE_ERROR(XVIO_PARSE_ERROR_ICMPV6_TRUNCATED) == XVIO_COUNTER_COUNT - 1,
              "kCounterNames must list every parse error");

}  // namespace

absl::StatusOr<MacAddress> ParseMacAddress(std::string_view text) {
  auto hex_value = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  MacAddress mac{};
  bool valid = text.size() == 17;
  for (std::size_t i = 0; valid && i < 6; ++i) {
    const int high = hex_value(text[i * 3]);
    const int low = hex_value(text[i * 3 + 1]);
    valid = high >= 0 && low >= 0 && (i == 5 || text[i * 3 + 2] == ':');
    mac[i] = static_cast<std::uint8_t>((high << 4) | low);
  }
  if (!valid) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", std::string(text),
                     "\" is not a MAC address (expected six hex bytes like 02:00:00:00:00:01)"));
  }
  return mac;
}

std::string FormatMacAddress(const MacAddress& mac) {
  char text[18];
  std::snprintf(text, sizeof(text), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                mac[4], mac[5]);
  return text;
}

std::string_view XdpModeName(XdpMode mode) {
  return mode == XdpMode::kNative ? "native" : "skb";
}

std::string_view CounterName(std::uint32_t counter) {
  return counter < kCounterNames.size() ? kCounterNames[counter] : "unknown";
}

xvio_config DefaultSteeringConfig() {
  xvio_config config{};
  config.hash_fields = XVIO_HASH_FIELDS_DEFAULT;
  config.flags = 0;
  config.sockets_per_queue = 1;
  config.ipv6_ext_header_limit = XVIO_IPV6_EXT_HEADER_LIMIT_DEFAULT;
  config.broadcast_action = XVIO_ACTION_PASS;
  config.multicast_action = XVIO_ACTION_PASS;
  config.unknown_unicast_action = XVIO_ACTION_PASS;
  config.malformed_action = XVIO_ACTION_DROP;
  std::copy(kMicrosoftRssKey.begin(), kMicrosoftRssKey.end(), config.hash_key);
  return config;
}

absl::StatusOr<std::unique_ptr<SteeringProgram>> SteeringProgram::Open(
    const SteeringOptions& options) {
  std::unique_ptr<SteeringProgram> program(new SteeringProgram());
  program->options_ = options;
  program->skeleton_ = xvio_steer__open();
  if (program->skeleton_ == nullptr) {
    return ErrnoError(errno, "opening the embedded BPF object xvio_steer");
  }
  bpf_program* chosen = options.multi_buffer ? program->skeleton_->progs.xvio_steer_frags
                                             : program->skeleton_->progs.xvio_steer;
  bpf_program* other = options.multi_buffer ? program->skeleton_->progs.xvio_steer
                                            : program->skeleton_->progs.xvio_steer_frags;
  bpf_program__set_autoload(other, false);
  bpf_program__set_autoload(chosen, true);

  if (!options.pin_directory.empty()) {
    absl::Status adopted = program->AdoptPinnedMaps();
    if (!adopted.ok())
      return adopted;
  }

  const char* section =
      options.multi_buffer ? XVIO_PROGRAM_SECTION_STEER_FRAGS : XVIO_PROGRAM_SECTION_STEER;
  program->xdp_program_ = xdp_program__from_bpf_obj(program->skeleton_->obj, section);
  long error = libxdp_get_error(program->xdp_program_);
  if (error) {
    program->xdp_program_ = nullptr;
    return LibxdpError(static_cast<int>(error),
                       std::string("libxdp could not use BPF section ") + section);
  }
  return program;
}

SteeringProgram::~SteeringProgram() {
  if (attached_ifindex_ != 0) {
    absl::Status detached = Detach();
    if (!detached.ok())
      std::fprintf(stderr, "xvio steering: %s\n", detached.ToString().c_str());
  }
  if (adopted_program_ != nullptr)
    xdp_program__close(adopted_program_);
  if (xdp_program_ != nullptr)
    xdp_program__close(xdp_program_);
  port_index_.reset();
  if (port_index_memory_ != nullptr)
    munmap(port_index_memory_, XVIO_PORT_INDEX_SLOTS * sizeof(xvio_port_slot));
  if (skeleton_ != nullptr)
    xvio_steer__destroy(skeleton_);
}

absl::Status SteeringProgram::AdoptPinnedMaps() {
  for (bpf_map* map : AllMaps(skeleton_)) {
    const std::string name = bpf_map__name(map);
    const std::string path = options_.pin_directory + "/" + name;
    if (!PathExists(path))
      continue;
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0)
      return ErrnoError(errno, "opening pinned map " + path);
    bpf_map_info info{};
    __u32 info_length = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &info_length) != 0) {
      int saved = errno;
      close(fd);
      return ErrnoError(saved, "reading the layout of pinned map " + path);
    }
    if (info.type != static_cast<__u32>(bpf_map__type(map)) ||
        info.key_size != bpf_map__key_size(map) || info.value_size != bpf_map__value_size(map) ||
        info.max_entries != bpf_map__max_entries(map)) {
      close(fd);
      return absl::FailedPreconditionError(absl::StrCat(
          "pinned map ", path, " (type ", info.type, ", key ", info.key_size, " B, value ",
          info.value_size, " B, ", info.max_entries, " entries) does not match this xvio's ", name,
          " (type ", bpf_map__type(map), ", key ", bpf_map__key_size(map), " B, value ",
          bpf_map__value_size(map), " B, ", bpf_map__max_entries(map),
          " entries); it was pinned by another xvio version. Remove ", options_.pin_directory,
          " to start with fresh maps (ports and sockets must then be set again)"));
    }
    int error = bpf_map__reuse_fd(map, fd);
    close(fd);  // reuse_fd keeps its own duplicate
    if (error != 0)
      return ErrnoError(error, "adopting pinned map " + path);
    adopted_maps_.push_back(name);
  }
  return absl::OkStatus();
}

absl::Status SteeringProgram::Load() {
  if (loaded_)
    return absl::OkStatus();
  int error = bpf_object__load(skeleton_->obj);
  if (error != 0) {
    return ErrnoError(error,
                      "loading the XDP steering program (the verifier log above says why; "
                      "loading needs root or CAP_BPF + CAP_NET_ADMIN)");
  }
  loaded_ = true;
  return AfterLoad();
}

absl::Status SteeringProgram::AfterLoad() {
  if (!options_.pin_directory.empty()) {
    if (mkdir(options_.pin_directory.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoError(errno, "creating pin directory " + options_.pin_directory +
                                   " (is bpffs mounted at /sys/fs/bpf?)");
    }
    for (bpf_map* map : AllMaps(skeleton_)) {
      const std::string path = options_.pin_directory + "/" + bpf_map__name(map);
      if (PathExists(path))
        continue;  // adopted
      int error = bpf_map__pin(map, path.c_str());
      if (error != 0) {
        return ErrnoError(error, "pinning map at " + path + " (the directory must be on bpffs)");
      }
    }
  }
  if (absl::Status index = SetUpPortIndex(); !index.ok())
    return index;
  if (!Adopted(XVIO_MAP_NAME_CONFIG)) {
    absl::Status written = WriteConfig(DefaultSteeringConfig());
    if (!written.ok())
      return written;
  }
  if (!Adopted(XVIO_MAP_NAME_TOEPLITZ)) {
    absl::StatusOr<xvio_config> config = ReadConfig();
    if (!config.ok())
      return config.status();
    ToeplitzKey key;
    std::copy(std::begin(config->hash_key), std::end(config->hash_key), key.begin());
    return SetHashKey(key);
  }
  return absl::OkStatus();
}

absl::StatusOr<AttachResult> SteeringProgram::Attach(int ifindex, bool allow_skb_fallback,
                                                     bool skb_only) {
  if (attached_ifindex_ != 0) {
    return absl::FailedPreconditionError("already attached to ifindex " +
                                         std::to_string(attached_ifindex_) + "; Detach() first");
  }
  AttachResult result;
  int error = 0;
  if (skb_only) {
    error = xdp_program__attach(xdp_program_, ifindex, XDP_MODE_SKB, 0);
    result.mode = XdpMode::kSkb;
  } else {
    error = xdp_program__attach(xdp_program_, ifindex, XDP_MODE_NATIVE, 0);
  }
  if (error != 0 && allow_skb_fallback && !skb_only) {
    result.native_attach_error = LibxdpError(error, "native XDP attach").ToString();
    error = xdp_program__attach(xdp_program_, ifindex, XDP_MODE_SKB, 0);
    result.mode = XdpMode::kSkb;
  }
  if (error != 0) {
    return LibxdpError(error, "attaching the XDP steering program to ifindex " +
                                  std::to_string(ifindex) +
                                  " (is another XDP program attached without libxdp? "
                                  "`ip link show` lists it)");
  }
  attached_ifindex_ = ifindex;
  attached_mode_ = result.mode;
  xdp_multiprog* multiprog = xdp_multiprog__get_from_ifindex(ifindex);
  if (libxdp_get_error(multiprog) == 0 && multiprog != nullptr) {
    result.dispatcher = !xdp_multiprog__is_legacy(multiprog);
    const xdp_attach_mode mode = xdp_multiprog__attach_mode(multiprog);
    if (mode == XDP_MODE_SKB || mode == XDP_MODE_NATIVE) {
      result.mode = mode == XDP_MODE_SKB ? XdpMode::kSkb : XdpMode::kNative;
    }
    xdp_multiprog__close(multiprog);
  }
  attached_mode_ = result.mode;
  attached_program_id_ = xdp_program__id(xdp_program_);
  if (!loaded_) {
    loaded_ = true;  // libxdp loaded the object
    absl::Status after = AfterLoad();
    if (!after.ok())
      return after;
  }
  return result;
}

absl::StatusOr<std::optional<AttachResult>> SteeringProgram::AdoptAttached(int ifindex) {
  if (attached_ifindex_ != 0) {
    return absl::FailedPreconditionError("already attached to ifindex " +
                                         std::to_string(attached_ifindex_) + "; Detach() first");
  }
  // Only a complete set of adopted maps can belong to a running program of
  // this version; the set without the port index, to one of the version
  // before it (the port index was added last; the other maps are unchanged,
  // AdoptPinnedMaps checked their layouts).
  const bool complete = adopted_maps_.size() == AllMaps(skeleton_).size();
  const bool before_port_index = !complete && !Adopted(XVIO_MAP_NAME_PORT_INDEX) &&
                                 adopted_maps_.size() + 1 == AllMaps(skeleton_).size();
  if (!complete && !before_port_index)
    return std::optional<AttachResult>();
  const std::uint32_t xsks_id = xsks_map_id();
  xdp_multiprog* multiprog = xdp_multiprog__get_from_ifindex(ifindex);
  if (libxdp_get_error(multiprog) != 0 || multiprog == nullptr)
    return std::optional<AttachResult>();
  // A program is ours when it uses the pinned xskmap (map ids are unique for
  // the map's lifetime, and the pin keeps it alive).
  auto uses_our_xskmap = [xsks_id](std::uint32_t program_id) {
    const int fd = bpf_prog_get_fd_by_id(program_id);
    if (fd < 0)
      return false;
    std::uint32_t map_ids[16] = {};
    bpf_prog_info info{};
    info.nr_map_ids = sizeof(map_ids) / sizeof(map_ids[0]);
    info.map_ids = reinterpret_cast<std::uint64_t>(map_ids);
    __u32 length = sizeof(info);
    const bool read = bpf_obj_get_info_by_fd(fd, &info, &length) == 0;
    close(fd);
    if (!read)
      return false;
    const std::uint32_t count = std::min<std::uint32_t>(info.nr_map_ids, 16);
    return std::find(map_ids, map_ids + count, xsks_id) != map_ids + count;
  };
  std::uint32_t found_id = 0;
  const bool legacy = xdp_multiprog__is_legacy(multiprog);
  if (legacy) {
    xdp_program* main = xdp_multiprog__main_prog(multiprog);
    if (main != nullptr && uses_our_xskmap(xdp_program__id(main)))
      found_id = xdp_program__id(main);
  } else {
    for (xdp_program* component = xdp_multiprog__next_prog(nullptr, multiprog);
         component != nullptr && found_id == 0;
         component = xdp_multiprog__next_prog(component, multiprog)) {
      if (uses_our_xskmap(xdp_program__id(component)))
        found_id = xdp_program__id(component);
    }
  }
  const xdp_attach_mode mode = xdp_multiprog__attach_mode(multiprog);
  xdp_multiprog__close(multiprog);
  if (found_id == 0)
    return std::optional<AttachResult>();
  if (before_port_index)
    return ReplaceOlderProgram(ifindex, found_id,
                               mode == XDP_MODE_SKB ? XdpMode::kSkb : XdpMode::kNative, legacy);

  xdp_program* adopted = xdp_program__from_id(found_id);
  if (long error = libxdp_get_error(adopted); error != 0)
    return LibxdpError(static_cast<int>(error),
                       "opening the attached steering program id " + std::to_string(found_id));
  // Our own copy of the program, loaded against the adopted maps, makes the
  // map operations and program_fd() work as after Attach().
  if (absl::Status status = Load(); !status.ok()) {
    xdp_program__close(adopted);
    return status;
  }
  adopted_program_ = adopted;
  attached_ifindex_ = ifindex;
  attached_mode_ = mode == XDP_MODE_SKB ? XdpMode::kSkb : XdpMode::kNative;
  attached_program_id_ = found_id;
  AttachResult result;
  result.mode = attached_mode_;
  result.dispatcher = !legacy;
  return std::optional<AttachResult>(result);
}

bool SteeringProgram::Adopted(std::string_view map_name) const {
  return std::find(adopted_maps_.begin(), adopted_maps_.end(), map_name) != adopted_maps_.end();
}

absl::StatusOr<std::optional<AttachResult>> SteeringProgram::ReplaceOlderProgram(
    int ifindex, std::uint32_t older_id, XdpMode mode, bool legacy) {
  const std::string older =
      absl::StrCat("the steering program id ", older_id, " on ifindex ", ifindex,
                   " (loaded by an older xvio: its pins in ", options_.pin_directory,
                   " have no " XVIO_MAP_NAME_PORT_INDEX ")");
  if (!legacy) {
    // A component of libxdp's dispatcher can only be swapped by building a
    // new dispatcher (libxdp 1.3 has no call for it); adding ours next to
    // it and removing it would run both for a while, untested here.
    return absl::FailedPreconditionError(absl::StrCat(
        older,
        " runs in libxdp's multi-program dispatcher, where it cannot be replaced in place. "
        "Unload it (`xdp-loader unload <interface> --id ",
        older_id,
        "`) and start again: the pinned maps (ports, sockets, config) are kept and adopted"));
  }
  // Our program over the adopted maps, with a new port index pinned next to
  // them and filled from xvio_ports (AfterLoad).
  if (absl::Status loaded = Load(); !loaded.ok())
    return loaded;
  // Until the swap succeeds the pins stay those of the older version, so
  // that a later attempt (the relay retries) upgrades again.
  const std::string index_pin = options_.pin_directory + "/" XVIO_MAP_NAME_PORT_INDEX;
  const int older_fd = bpf_prog_get_fd_by_id(older_id);
  if (older_fd < 0) {
    const int saved = errno;
    unlink(index_pin.c_str());
    return ErrnoError(saved, "opening " + older);
  }
  bpf_xdp_attach_opts options{};
  options.sz = sizeof(options);
  options.old_prog_fd = older_fd;
  // The mode the older program runs in: the kernel refuses native and skb
  // mode programs on one interface at once.
  const std::uint32_t flags =
      XDP_FLAGS_REPLACE | (mode == XdpMode::kSkb ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE);
  const int error = bpf_xdp_attach(ifindex, program_fd(), flags, &options);
  close(older_fd);
  if (error != 0) {
    unlink(index_pin.c_str());
    return ErrnoError(error, "replacing " + older + " in place with this xvio's program");
  }
  // Detach() goes through libxdp, which knows a program attached alone by
  // its id, as for an adopted program.
  bpf_prog_info info{};
  __u32 length = sizeof(info);
  if (bpf_obj_get_info_by_fd(program_fd(), &info, &length) != 0)
    return ErrnoError(errno, "reading the id of the steering program that replaced " + older);
  xdp_program* ours = xdp_program__from_id(info.id);
  if (long open_error = libxdp_get_error(ours); open_error != 0)
    return LibxdpError(static_cast<int>(open_error),
                       "opening the attached steering program id " + std::to_string(info.id));
  adopted_program_ = ours;
  attached_ifindex_ = ifindex;
  attached_mode_ = mode;
  attached_program_id_ = info.id;
  AttachResult result;
  result.mode = mode;
  result.dispatcher = false;
  result.replaced_program_id = older_id;
  return std::optional<AttachResult>(result);
}

std::uint32_t SteeringProgram::xsks_map_id() const {
  bpf_map_info info{};
  __u32 length = sizeof(info);
  if (bpf_obj_get_info_by_fd(xsks_map_fd(), &info, &length) != 0)
    return 0;
  return info.id;
}

absl::Status SteeringProgram::RemovePins() {
  if (options_.pin_directory.empty())
    return absl::OkStatus();
  for (bpf_map* map : AllMaps(skeleton_)) {
    const std::string path = options_.pin_directory + "/" + bpf_map__name(map);
    if (unlink(path.c_str()) != 0 && errno != ENOENT)
      return ErrnoError(errno, "removing the pin " + path);
  }
  if (rmdir(options_.pin_directory.c_str()) != 0 && errno != ENOENT && errno != ENOTEMPTY)
    return ErrnoError(errno, "removing the pin directory " + options_.pin_directory);
  return absl::OkStatus();
}

absl::Status SteeringProgram::Detach() {
  if (attached_ifindex_ == 0)
    return absl::OkStatus();
  xdp_program* program = adopted_program_ != nullptr ? adopted_program_ : xdp_program_;
  int error =
      xdp_program__detach(program, attached_ifindex_,
                          attached_mode_ == XdpMode::kNative ? XDP_MODE_NATIVE : XDP_MODE_SKB, 0);
  const int ifindex = attached_ifindex_;
  attached_ifindex_ = 0;
  attached_program_id_ = 0;
  if (error != 0) {
    return LibxdpError(
        error, "detaching the XDP steering program from ifindex " + std::to_string(ifindex));
  }
  return absl::OkStatus();
}

int SteeringProgram::program_fd() const {
  return bpf_program__fd(options_.multi_buffer ? skeleton_->progs.xvio_steer_frags
                                               : skeleton_->progs.xvio_steer);
}

int SteeringProgram::ports_map_fd() const {
  return bpf_map__fd(skeleton_->maps.xvio_ports);
}
int SteeringProgram::xsks_map_fd() const {
  return bpf_map__fd(skeleton_->maps.xvio_xsks);
}
int SteeringProgram::config_map_fd() const {
  return bpf_map__fd(skeleton_->maps.xvio_config);
}
int SteeringProgram::toeplitz_map_fd() const {
  return bpf_map__fd(skeleton_->maps.xvio_toeplitz);
}
int SteeringProgram::counters_map_fd() const {
  return bpf_map__fd(skeleton_->maps.xvio_counters);
}
int SteeringProgram::port_index_map_fd() const {
  return bpf_map__fd(skeleton_->maps.xvio_port_index);
}

std::size_t SteeringProgram::port_index_overflowed() const {
  return port_index_ != nullptr ? port_index_->overflowed() : 0;
}

absl::Status SteeringProgram::RequireLoaded(std::string_view operation) const {
  // The index is set up right after loading; an object whose set-up failed
  // must not write ports the program would not find.
  if (loaded_ && port_index_ != nullptr)
    return absl::OkStatus();
  return absl::FailedPreconditionError(std::string(operation) +
                                       " needs the program loaded: call Load() or Attach() first");
}

absl::Status SteeringProgram::SetUpPortIndex() {
  if (port_index_ != nullptr)
    return absl::OkStatus();
  const std::size_t bytes = XVIO_PORT_INDEX_SLOTS * sizeof(xvio_port_slot);
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, port_index_map_fd(), 0);
  if (memory == MAP_FAILED)
    return ErrnoError(errno, "mapping the port index map " XVIO_MAP_NAME_PORT_INDEX);
  port_index_memory_ = memory;
  port_index_ = std::make_unique<PortIndex>(
      std::span(static_cast<xvio_port_slot*>(memory), XVIO_PORT_INDEX_SLOTS));
  // The index may be fresh next to an adopted port map, or adopted from an
  // agent that stopped between the two updates: the port map decides.
  std::vector<std::pair<xvio_port_key, xvio_port_value>> entries;
  xvio_port_key key{};
  xvio_port_key next{};
  const xvio_port_key* previous = nullptr;
  while (bpf_map_get_next_key(ports_map_fd(), previous, &next) == 0) {
    xvio_port_value value{};
    if (bpf_map_lookup_elem(ports_map_fd(), &next, &value) == 0)
      entries.emplace_back(next, value);
    key = next;
    previous = &key;
  }
  port_index_->Reconcile(entries);
  return absl::OkStatus();
}

absl::Status SteeringProgram::UpsertPort(const MacAddress& mac, std::uint16_t vlan_id,
                                         std::uint32_t port_id, std::uint32_t flags) {
  if (absl::Status status = RequireLoaded("UpsertPort"); !status.ok())
    return status;
  if (vlan_id > 4095) {
    return absl::InvalidArgumentError("VLAN id " + std::to_string(vlan_id) + " is not in 0..4095");
  }
  xvio_port_key key{};
  std::copy(mac.begin(), mac.end(), key.mac);
  key.vlan_id = vlan_id;
  xvio_port_value value{port_id, flags};
  if (bpf_map_update_elem(ports_map_fd(), &key, &value, BPF_ANY) != 0) {
    return ErrnoError(errno, "adding port " + std::to_string(port_id) + " for " +
                                 FormatMacAddress(mac) + " vlan " + std::to_string(vlan_id) +
                                 " (the map holds " + std::to_string(XVIO_PORT_MAP_MAX_ENTRIES) +
                                 " entries)");
  }
  port_index_->Upsert(key, value);
  return absl::OkStatus();
}

absl::Status SteeringProgram::DeletePort(const MacAddress& mac, std::uint16_t vlan_id) {
  if (absl::Status status = RequireLoaded("DeletePort"); !status.ok())
    return status;
  xvio_port_key key{};
  std::copy(mac.begin(), mac.end(), key.mac);
  key.vlan_id = vlan_id;
  // Out of the index first: until the map entry goes too, the program finds
  // the port through its fallback or not at all, never a stale copy.
  port_index_->Erase(key);
  if (bpf_map_delete_elem(ports_map_fd(), &key) != 0) {
    return ErrnoError(errno, "removing the port entry for " + FormatMacAddress(mac) + " vlan " +
                                 std::to_string(vlan_id));
  }
  return absl::OkStatus();
}

absl::Status SteeringProgram::SetSocket(std::uint32_t slot, int xsk_fd) {
  if (absl::Status status = RequireLoaded("SetSocket"); !status.ok())
    return status;
  if (bpf_map_update_elem(xsks_map_fd(), &slot, &xsk_fd, BPF_ANY) != 0) {
    return ErrnoError(errno, "putting AF_XDP socket fd " + std::to_string(xsk_fd) + " into slot " +
                                 std::to_string(slot) + " (slots 0.." +
                                 std::to_string(XVIO_XSK_MAP_MAX_ENTRIES - 1) +
                                 "; the fd must be a bound AF_XDP socket)");
  }
  return absl::OkStatus();
}

absl::Status SteeringProgram::ClearSocket(std::uint32_t slot) {
  if (absl::Status status = RequireLoaded("ClearSocket"); !status.ok())
    return status;
  if (bpf_map_delete_elem(xsks_map_fd(), &slot) != 0 && errno != ENOENT) {
    return ErrnoError(errno, "clearing AF_XDP socket slot " + std::to_string(slot));
  }
  return absl::OkStatus();
}

absl::StatusOr<xvio_config> SteeringProgram::ReadConfig() const {
  if (absl::Status status = RequireLoaded("ReadConfig"); !status.ok())
    return status;
  xvio_config config{};
  std::uint32_t zero = 0;
  if (bpf_map_lookup_elem(config_map_fd(), &zero, &config) != 0) {
    return ErrnoError(errno, "reading the steering config map");
  }
  return config;
}

absl::Status SteeringProgram::WriteConfig(const xvio_config& config) {
  if (absl::Status status = RequireLoaded("WriteConfig"); !status.ok())
    return status;
  if (config.broadcast_action > XVIO_ACTION_REDIRECT ||
      config.multicast_action > XVIO_ACTION_REDIRECT ||
      config.unknown_unicast_action > XVIO_ACTION_REDIRECT ||
      config.malformed_action > XVIO_ACTION_REDIRECT) {
    return absl::InvalidArgumentError("an action is not one of PASS (0), DROP (1), REDIRECT (2)");
  }
  if ((config.hash_fields & ~XVIO_HASH_FIELDS_ALL) != 0) {
    return absl::InvalidArgumentError(
        "hash fields may only use the nine virtio-net RSS hash type bits (XVIO_HASH_FIELDS_*)");
  }
  std::uint32_t zero = 0;
  if (bpf_map_update_elem(config_map_fd(), &zero, &config, BPF_ANY) != 0) {
    return ErrnoError(errno, "writing the steering config map");
  }
  return absl::OkStatus();
}

absl::Status SteeringProgram::SetHashKey(const ToeplitzKey& key) {
  if (absl::Status status = RequireLoaded("SetHashKey"); !status.ok())
    return status;
  auto table = std::make_unique<xvio_toeplitz_table>();
  BuildToeplitzTable(key, *table);
  std::uint32_t zero = 0;
  if (bpf_map_update_elem(toeplitz_map_fd(), &zero, table.get(), BPF_ANY) != 0) {
    return ErrnoError(errno, "writing the Toeplitz table map");
  }
  absl::StatusOr<xvio_config> config = ReadConfig();
  if (!config.ok())
    return config.status();
  std::copy(key.begin(), key.end(), config->hash_key);
  return WriteConfig(*config);
}

absl::Status SteeringProgram::SetSymmetricHash(bool symmetric) {
  absl::StatusOr<xvio_config> config = ReadConfig();
  if (!config.ok())
    return config.status();
  if (symmetric) {
    config->flags |= XVIO_CONFIG_FLAG_SYMMETRIC_HASH;
  } else {
    config->flags &= ~XVIO_CONFIG_FLAG_SYMMETRIC_HASH;
  }
  return WriteConfig(*config);
}

absl::Status SteeringProgram::SetHashFields(std::uint32_t hash_fields) {
  absl::StatusOr<xvio_config> config = ReadConfig();
  if (!config.ok())
    return config.status();
  config->hash_fields = hash_fields;
  return WriteConfig(*config);
}

absl::Status SteeringProgram::SetActions(xvio_action broadcast, xvio_action multicast,
                                         xvio_action unknown_unicast, xvio_action malformed) {
  absl::StatusOr<xvio_config> config = ReadConfig();
  if (!config.ok())
    return config.status();
  config->broadcast_action = static_cast<__u8>(broadcast);
  config->multicast_action = static_cast<__u8>(multicast);
  config->unknown_unicast_action = static_cast<__u8>(unknown_unicast);
  config->malformed_action = static_cast<__u8>(malformed);
  return WriteConfig(*config);
}

absl::Status SteeringProgram::SetSocketsPerQueue(std::uint32_t sockets_per_queue) {
  if (sockets_per_queue == 0 || sockets_per_queue > XVIO_XSK_MAP_MAX_ENTRIES) {
    return absl::InvalidArgumentError("sockets per queue must be 1.." +
                                      std::to_string(XVIO_XSK_MAP_MAX_ENTRIES));
  }
  absl::StatusOr<xvio_config> config = ReadConfig();
  if (!config.ok())
    return config.status();
  config->sockets_per_queue = sockets_per_queue;
  return WriteConfig(*config);
}

absl::StatusOr<SteeringProgram::Counters> SteeringProgram::ReadCounters() const {
  if (absl::Status status = RequireLoaded("ReadCounters"); !status.ok())
    return status;
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0)
    return ErrnoError(cpus, "counting possible CPUs");
  std::vector<xvio_counters> per_cpu(static_cast<std::size_t>(cpus));
  std::uint32_t zero = 0;
  if (bpf_map_lookup_elem(counters_map_fd(), &zero, per_cpu.data()) != 0) {
    return ErrnoError(errno, "reading the per-CPU counters map");
  }
  Counters sum{};
  for (const xvio_counters& cpu : per_cpu) {
    for (std::size_t i = 0; i < sum.size(); ++i)
      sum[i] += cpu.count[i];
  }
  return sum;
}

}  // namespace xvio::steering
