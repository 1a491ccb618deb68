// The desired state on disk: <state dir>/state.pb, replaced atomically on every
// change (write a temporary file, fsync it, rename it over the old one, fsync
// the directory), so a crash at any moment leaves either the old or the new
// state, never a torn one. A lock file keeps two agents off one state dir.
#pragma once

#include <filesystem>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/control/state.pb.h"

namespace xvio::control {

class StateFile {
 public:
  static constexpr const char* kFileName = "state.pb";
  static constexpr uint32_t kFormatVersion = 1;

  // Creates the directory (mode 0700) if needed and takes an exclusive
  // advisory lock on <dir>/lock; fails with FAILED_PRECONDITION when another
  // process holds it.
  static absl::StatusOr<std::unique_ptr<StateFile>> Open(const std::filesystem::path& state_dir);
  ~StateFile();
  StateFile(const StateFile&) = delete;
  StateFile& operator=(const StateFile&) = delete;

  // The stored state; an empty one when no file exists yet (first start).
  // A file that cannot be parsed is an error, never silently discarded.
  absl::StatusOr<state::AgentState> Load() const;
  // Replaces the stored state atomically (see above).
  absl::Status Save(const state::AgentState& state);
  // The same with already serialised AgentState bytes (lets the store build
  // them without copying every resource into an AgentState first).
  absl::Status SaveSerialized(const std::string& data);

  const std::filesystem::path& path() const { return path_; }

 private:
  StateFile(std::filesystem::path dir, int lock_fd);

  std::filesystem::path dir_;
  std::filesystem::path path_;
  int lock_fd_;
};

}  // namespace xvio::control
