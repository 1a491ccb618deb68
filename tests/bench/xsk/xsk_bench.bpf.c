// XDP programs for the xsk benchmark: the device-under-test side redirects
// every frame to the XSKMAP slot of its RX queue (like libxdp's default
// program, which DPDK's AF_XDP PMD loads for its own run), and the generator
// side, run through BPF_PROG_TEST_RUN with live frames, sends every frame out
// of the generator's veth end; the sink counts and drops what comes back.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, 64);
  __type(key, __u32);
  __type(value, __u32);
} xsks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} sink_packets SEC(".maps");

const volatile __u32 generator_target_ifindex = 0;

SEC("xdp")
int bench_redirect(struct xdp_md* ctx) {
  return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int bench_generate(struct xdp_md* ctx) {
  return bpf_redirect(generator_target_ifindex, 0);
}

// The sink at the generator's end: counts what the side under test delivered
// and drops it, so delivered packets are measured where they arrive.
SEC("xdp")
int bench_sink(struct xdp_md* ctx) {
  __u32 key = 0;
  __u64* count = bpf_map_lookup_elem(&sink_packets, &key);
  if (count)
    *count += 1;
  return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
