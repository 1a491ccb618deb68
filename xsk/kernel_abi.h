// AF_XDP kernel ABI constants that Debian 12's linux-libc-dev (6.1) headers lack.
// Values are the kernel's uapi (include/uapi/linux/if_xdp.h, asm-generic/socket.h);
// each is defined only when the system header does not already provide it.
#pragma once

#include <linux/if_xdp.h>
#include <sys/socket.h>

#include <cstdint>

// Bind flag: the socket accepts packets spread over several descriptors
// (multi-buffer, kernel >= 6.6). The XDP program must be frags-aware
// (SEC("xdp.frags"), BPF_F_XDP_HAS_FRAGS).
#ifndef XDP_USE_SG
#define XDP_USE_SG (1 << 4)
#endif

// xdp_desc.options bit: more descriptors of the same packet follow this one.
#ifndef XDP_PKT_CONTD
#define XDP_PKT_CONTD (1 << 0)
#endif

// setsockopt(SOL_XDP): how many descriptors one copy-mode sendto() may send
// before it returns EAGAIN (kernel >= 6.17; default 32, range 32..tx ring size).
#ifndef XDP_MAX_TX_SKB_BUDGET
#define XDP_MAX_TX_SKB_BUDGET 9
#endif

// Unaligned chunk mode: the RX descriptor address carries the data offset in
// its upper 16 bits.
#ifndef XSK_UNALIGNED_BUF_OFFSET_SHIFT
#define XSK_UNALIGNED_BUF_OFFSET_SHIFT 48
#endif
#ifndef XSK_UNALIGNED_BUF_ADDR_MASK
#define XSK_UNALIGNED_BUF_ADDR_MASK ((1ULL << XSK_UNALIGNED_BUF_OFFSET_SHIFT) - 1)
#endif

// getsockopt(SOL_SOCKET): 64-bit cookie of the socket's network namespace (5.14).
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

// Preferred busy polling (kernel >= 5.11).
#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

namespace xvio::xsk {

// Bytes the kernel always reserves in front of received packet data in every
// frame (XDP_PACKET_HEADROOM), before the UMEM's own headroom.
inline constexpr uint32_t kKernelFrameHeadroomBytes = 256;

}  // namespace xvio::xsk

namespace xvio::xsk {

// struct xdp_umem_reg as the current kernel defines it (6.8 added
// tx_metadata_len). The 6.1 header's struct has 4 bytes of tail padding in
// that place, which the kernel would read as tx_metadata_len; this version
// names the field so it is always zeroed.
struct UmemRegistration {
  uint64_t address;
  uint64_t length_bytes;
  uint32_t chunk_size_bytes;
  uint32_t headroom_bytes;
  uint32_t flags;
  uint32_t tx_metadata_length_bytes;
};
static_assert(sizeof(UmemRegistration) == 32);

}  // namespace xvio::xsk
