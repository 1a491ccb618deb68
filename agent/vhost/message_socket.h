// Reading and writing vhost-user messages on a unix stream socket: header,
// payload and SCM_RIGHTS fds, with the size and truncation checks that keep a
// hostile front-end from desynchronising the stream or leaking fds into us.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "agent/vhost/vhost_user_messages.h"

namespace xvio::vhost {

// Receives one message into `message` (blocking). On success the fds that came
// with it are in message.fds and owned by the caller (CloseMessageFds).
// Errors: UnavailableError when the peer closed the connection cleanly,
// InvalidArgumentError/DataLossError for a malformed or truncated message
// (every fd received is closed before returning). After an error the stream
// cannot be trusted and the connection must be closed.
absl::Status ReceiveMessage(int socket_fd, Message& message);

// Closes the fds still held by `message` and forgets them.
void CloseMessageFds(Message& message);

// Sends a reply: header {request, flags=VERSION|REPLY, size} then `payload`.
absl::Status SendReply(int socket_fd, uint32_t request, const void* payload, size_t payload_bytes);

// Sends a request with optional fds (used by test front-ends and fuzzers).
absl::Status SendRequest(int socket_fd, uint32_t request, uint32_t flags, const void* payload,
                         size_t payload_bytes, const int* fds, size_t fd_count);

}  // namespace xvio::vhost
