// Atomic persistence of the desired state (see state_file.h).
#include "agent/control/state_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace xvio::control {
namespace {

std::string ErrnoText(int error) {
  return std::strerror(error);
}

absl::Status ErrnoError(absl::string_view what, const std::filesystem::path& path, int error) {
  return absl::InternalError(absl::StrCat(what, " ", path.string(), ": ", ErrnoText(error)));
}

// Writes all of `data`, retrying short writes and EINTR.
bool WriteAll(int fd, const std::string& data) {
  std::size_t written = 0;
  while (written < data.size()) {
    ssize_t result = ::write(fd, data.data() + written, data.size() - written);
    if (result < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    written += static_cast<std::size_t>(result);
  }
  return true;
}

}  // namespace

StateFile::StateFile(std::filesystem::path dir, int lock_fd)
    : dir_(std::move(dir)), path_(dir_ / kFileName), lock_fd_(lock_fd) {}

StateFile::~StateFile() {
  if (lock_fd_ >= 0)
    ::close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<StateFile>> StateFile::Open(const std::filesystem::path& state_dir) {
  std::error_code error;
  std::filesystem::create_directories(state_dir, error);
  if (error) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create the state directory ",
                                                      state_dir.string(), ": ", error.message(),
                                                      " (set --state-dir to a writable path)"));
  }
  ::chmod(state_dir.c_str(), 0700);
  const std::filesystem::path lock_path = state_dir / "lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return ErrnoError("cannot open lock file", lock_path, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int lock_error = errno;
    ::close(fd);
    if (lock_error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("the state directory ", state_dir.string(),
                       " is locked by another process (another xvio-agent running?); "
                       "give each agent its own --state-dir"));
    }
    return ErrnoError("cannot lock", lock_path, lock_error);
  }
  return std::unique_ptr<StateFile>(new StateFile(state_dir, fd));
}

absl::StatusOr<state::AgentState> StateFile::Load() const {
  state::AgentState state;
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      state.set_format_version(kFormatVersion);
      return state;
    }
    return ErrnoError("cannot open", path_, errno);
  }
  const bool parsed = state.ParseFromFileDescriptor(fd);
  ::close(fd);
  if (!parsed) {
    return absl::DataLossError(
        absl::StrCat(path_.string(),
                     " is not a valid xvio state file; move it away to start with empty state, "
                     "or restore it from a backup"));
  }
  if (state.format_version() != kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        path_.string(), " has state format ", state.format_version(), ", this agent reads format ",
        kFormatVersion, "; run an agent version that matches it"));
  }
  return state;
}

absl::Status StateFile::Save(const state::AgentState& state) {
  std::string data;
  if (!state.SerializeToString(&data)) {
    return absl::InternalError("cannot serialise the desired state");
  }
  return SaveSerialized(data);
}

absl::Status StateFile::SaveSerialized(const std::string& data) {
  const std::filesystem::path temporary = dir_ / absl::StrCat(kFileName, ".tmp");
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return ErrnoError("cannot create", temporary, errno);
  if (!WriteAll(fd, data) || ::fsync(fd) != 0) {
    int write_error = errno;
    ::close(fd);
    ::unlink(temporary.c_str());
    return ErrnoError("cannot write", temporary, write_error);
  }
  ::close(fd);
  if (::rename(temporary.c_str(), path_.c_str()) != 0) {
    int rename_error = errno;
    ::unlink(temporary.c_str());
    return ErrnoError("cannot replace", path_, rename_error);
  }
  // The rename is durable only once the directory entry is.
  int dir_fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0)
    return ErrnoError("cannot open", dir_, errno);
  const int sync_result = ::fsync(dir_fd);
  const int sync_error = errno;
  ::close(dir_fd);
  if (sync_result != 0)
    return ErrnoError("cannot fsync", dir_, sync_error);
  return absl::OkStatus();
}

}  // namespace xvio::control
