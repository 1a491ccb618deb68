// XDP programs for the xsk tests (the real steering program lives in bpf/):
// redirect test frames to the XSKMAP slot of their RX queue, or bounce them
// back out (XDP_TX) for loop tests. Frames of any other EtherType (IPv6
// neighbour discovery and the like from the lab's own stacks) go to the stack.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "tests/xsk/xsk_test_frame.h"

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, 64);
  __type(key, __u32);
  __type(value, __u32);
} xsks SEC(".maps");

static __always_inline int is_test_frame(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > data_end)
    return 0;
  return eth->h_proto == bpf_htons(XVIO_XSK_TEST_ETHERTYPE);
}

static __always_inline int redirect_by_queue(struct xdp_md* ctx) {
  if (!is_test_frame(ctx))
    return XDP_PASS;
  return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

static __always_inline int reflect(struct xdp_md* ctx) {
  if (!is_test_frame(ctx))
    return XDP_PASS;
  return XDP_TX;
}

SEC("xdp")
int xsk_redirect(struct xdp_md* ctx) {
  return redirect_by_queue(ctx);
}

// Same, loadable on interfaces whose MTU needs multi-buffer frames
// (BPF_F_XDP_HAS_FRAGS); required for XDP_USE_SG sockets.
SEC("xdp.frags")
int xsk_redirect_frags(struct xdp_md* ctx) {
  return redirect_by_queue(ctx);
}

SEC("xdp")
int xsk_reflect(struct xdp_md* ctx) {
  return reflect(ctx);
}

char LICENSE[] SEC("license") = "GPL";
