// A QEMU guest for end-to-end tests: TCG, Debian kernel + busybox initramfs
// (build-guest-image.sh), one virtio-net NIC on a vhost-user socket, and a
// shell on the serial console that the test drives through a pipe; and
// QemuGuestTest, the fixture of every test that boots one.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <string>

namespace xvio::testing {

struct GuestImage {
  std::string kernel;
  std::string initrd;
};

// Runs tests/e2e/build-guest-image.sh (downloads the kernel into the cache
// on first use). Throws with the script's output on failure.
GuestImage BuildGuestImage(const std::string& cache_dir = "/var/cache/xvio-test");

struct GuestOptions {
  GuestImage image;
  std::string vhost_socket;  // QEMU connects to it (the back-end listens)
  std::string mac = "52:54:00:00:00:01";
  std::string ipv4_cidr;  // eth0 address, e.g. "10.55.0.1/24"
  int memory_mb = 256;
  std::string device_options;  // appended to -device virtio-net-pci,...
  std::string log_path;        // serial console transcript
};

class QemuGuest {
 public:
  explicit QemuGuest(GuestOptions options);
  ~QemuGuest();  // SIGKILL (the guest has no state worth a clean shutdown)
  QemuGuest(const QemuGuest&) = delete;
  QemuGuest& operator=(const QemuGuest&) = delete;

  // Waits for /init's XVIO_GUEST_READY and the first shell prompt.
  void WaitReady(std::chrono::seconds timeout = std::chrono::seconds(180));

  struct Result {
    int status = -1;     // exit status of the command, -1 on timeout
    std::string output;  // console text produced while it ran
  };
  // Runs a shell command on the serial console.
  Result Run(const std::string& command, std::chrono::seconds timeout = std::chrono::seconds(120));

 private:
  // Reads console output until `marker` appears; returns the text read.
  std::string ReadUntil(const std::string& marker, std::chrono::milliseconds timeout);

  GuestOptions options_;
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string pending_;  // read but not yet consumed
  std::string transcript_;
  int command_sequence_ = 0;
};

// Fixture for tests that boot guests: SetUp skips the test without root,
// without qemu-system-x86_64, or without a guest image (the kernel could not
// be downloaded here), and keeps the image for GuestOptions.
class QemuGuestTest : public ::testing::Test {
 protected:
  void SetUp() override;

  GuestImage image_;
};

}  // namespace xvio::testing
