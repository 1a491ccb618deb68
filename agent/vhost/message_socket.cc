// vhost-user message framing over a unix stream socket.
#include "agent/vhost/message_socket.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace xvio::vhost {
namespace {

// Collects the SCM_RIGHTS fds of one recvmsg into `message`. Fds beyond the
// message's capacity are closed at once and reported through `overflow`.
void TakeFds(msghdr& header, Message& message, bool& overflow) {
  for (cmsghdr* control = CMSG_FIRSTHDR(&header); control != nullptr;
       control = CMSG_NXTHDR(&header, control)) {
    if (control->cmsg_level != SOL_SOCKET || control->cmsg_type != SCM_RIGHTS)
      continue;
    const size_t count = (control->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const auto* fds = reinterpret_cast<const int*>(CMSG_DATA(control));
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, fds + i, sizeof(fd));
      if (message.fd_count < kMaxFdsPerMessage) {
        message.fds[message.fd_count++] = fd;
      } else {
        close(fd);
        overflow = true;
      }
    }
  }
}

// recvmsg of exactly `length` bytes into `buffer`, collecting fds.
absl::Status ReceiveExactly(int socket_fd, void* buffer, size_t length, Message& message,
                            bool allow_clean_eof) {
  size_t received = 0;
  while (received < length) {
    iovec io{static_cast<char*>(buffer) + received, length - received};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    msghdr header{};
    header.msg_iov = &io;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof(control);
    const ssize_t result = recvmsg(socket_fd, &header, MSG_CMSG_CLOEXEC);
    if (result < 0) {
      if (errno == EINTR)
        continue;
      return absl::UnavailableError(absl::StrFormat("recvmsg: %s", std::strerror(errno)));
    }
    bool overflow = false;
    TakeFds(header, message, overflow);
    if ((header.msg_flags & MSG_CTRUNC) != 0 || overflow) {
      // The kernel dropped fds that did not fit: the peer sent more than 8.
      return absl::InvalidArgumentError(
          absl::StrFormat("message carried more than %d fds", kMaxFdsPerMessage));
    }
    if (result == 0) {
      if (received == 0 && allow_clean_eof)
        return absl::UnavailableError("front-end closed");
      return absl::DataLossError("front-end closed the connection in the middle of a message");
    }
    received += static_cast<size_t>(result);
  }
  return absl::OkStatus();
}

}  // namespace

void CloseMessageFds(Message& message) {
  for (size_t i = 0; i < message.fd_count; ++i) {
    if (message.fds[i] >= 0)
      close(message.fds[i]);
    message.fds[i] = -1;
  }
  message.fd_count = 0;
}

absl::Status ReceiveMessage(int socket_fd, Message& message) {
  message.fd_count = 0;
  absl::Status status =
      ReceiveExactly(socket_fd, &message.header, sizeof(message.header), message, true);
  if (status.ok()) {
    if ((message.header.flags & kFlagVersionMask) != kFlagVersion) {
      status = absl::InvalidArgumentError(
          absl::StrFormat("unsupported protocol version in flags 0x%x", message.header.flags));
    } else if (message.header.size > kMaxPayloadBytes) {
      status = absl::InvalidArgumentError(absl::StrFormat("%s payload of %d bytes exceeds %d",
                                                          RequestName(message.header.request),
                                                          message.header.size, kMaxPayloadBytes));
    } else if (message.header.size > 0) {
      status =
          ReceiveExactly(socket_fd, message.payload.bytes, message.header.size, message, false);
    }
  }
  if (!status.ok())
    CloseMessageFds(message);
  // Unused payload bytes stay zero so short payloads read as zeros, never as
  // leftovers of an earlier message.
  if (status.ok() && message.header.size < kMaxPayloadBytes) {
    std::memset(message.payload.bytes + message.header.size, 0,
                sizeof(message.payload) - message.header.size);
  }
  return status;
}

absl::Status SendRequest(int socket_fd, uint32_t request, uint32_t flags, const void* payload,
                         size_t payload_bytes, const int* fds, size_t fd_count) {
  MessageHeader header{request, flags, static_cast<uint32_t>(payload_bytes)};
  iovec io[2] = {{&header, sizeof(header)}, {const_cast<void*>(payload), payload_bytes}};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  msghdr message{};
  message.msg_iov = io;
  message.msg_iovlen = payload_bytes > 0 ? 2 : 1;
  if (fd_count > 16)
    return absl::InvalidArgumentError("too many fds to send");
  if (fd_count > 0) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count);
    cmsghdr* control_header = CMSG_FIRSTHDR(&message);
    control_header->cmsg_level = SOL_SOCKET;
    control_header->cmsg_type = SCM_RIGHTS;
    control_header->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
    std::memcpy(CMSG_DATA(control_header), fds, sizeof(int) * fd_count);
  }
  const size_t total = sizeof(header) + payload_bytes;
  ssize_t sent;
  do {
    sent = sendmsg(socket_fd, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0)
    return absl::UnavailableError(absl::StrFormat("sendmsg: %s", std::strerror(errno)));
  if (static_cast<size_t>(sent) != total)
    return absl::UnavailableError("short sendmsg");
  return absl::OkStatus();
}

absl::Status SendReply(int socket_fd, uint32_t request, const void* payload, size_t payload_bytes) {
  return SendRequest(socket_fd, request, kFlagVersion | kFlagReply, payload, payload_bytes, nullptr,
                     0);
}

const char* RequestName(uint32_t request) {
  switch (static_cast<Request>(request)) {
    case Request::kGetFeatures:
      return "GET_FEATURES";
    case Request::kSetFeatures:
      return "SET_FEATURES";
    case Request::kSetOwner:
      return "SET_OWNER";
    case Request::kResetOwner:
      return "RESET_OWNER";
    case Request::kSetMemTable:
      return "SET_MEM_TABLE";
    case Request::kSetLogBase:
      return "SET_LOG_BASE";
    case Request::kSetLogFd:
      return "SET_LOG_FD";
    case Request::kSetVringNum:
      return "SET_VRING_NUM";
    case Request::kSetVringAddr:
      return "SET_VRING_ADDR";
    case Request::kSetVringBase:
      return "SET_VRING_BASE";
    case Request::kGetVringBase:
      return "GET_VRING_BASE";
    case Request::kSetVringKick:
      return "SET_VRING_KICK";
    case Request::kSetVringCall:
      return "SET_VRING_CALL";
    case Request::kSetVringErr:
      return "SET_VRING_ERR";
    case Request::kGetProtocolFeatures:
      return "GET_PROTOCOL_FEATURES";
    case Request::kSetProtocolFeatures:
      return "SET_PROTOCOL_FEATURES";
    case Request::kGetQueueNum:
      return "GET_QUEUE_NUM";
    case Request::kSetVringEnable:
      return "SET_VRING_ENABLE";
    case Request::kSendRarp:
      return "SEND_RARP";
    case Request::kNetSetMtu:
      return "NET_SET_MTU";
    case Request::kSetBackendReqFd:
      return "SET_BACKEND_REQ_FD";
    case Request::kIotlbMsg:
      return "IOTLB_MSG";
    case Request::kSetVringEndian:
      return "SET_VRING_ENDIAN";
    case Request::kGetConfig:
      return "GET_CONFIG";
    case Request::kSetConfig:
      return "SET_CONFIG";
    case Request::kGetInflightFd:
      return "GET_INFLIGHT_FD";
    case Request::kSetInflightFd:
      return "SET_INFLIGHT_FD";
    case Request::kResetDevice:
      return "RESET_DEVICE";
    case Request::kGetMaxMemSlots:
      return "GET_MAX_MEM_SLOTS";
    case Request::kAddMemReg:
      return "ADD_MEM_REG";
    case Request::kRemMemReg:
      return "REM_MEM_REG";
    case Request::kSetStatus:
      return "SET_STATUS";
    case Request::kGetStatus:
      return "GET_STATUS";
    case Request::kNone:
      break;
  }
  return "UNKNOWN";
}

}  // namespace xvio::vhost
