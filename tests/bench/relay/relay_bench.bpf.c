// XDP programs for the relay benchmark's uplink side (tests/bench/relay):
// the generator, run through BPF_PROG_TEST_RUN with live frames, stamps each
// frame with the time and sends it out of the generator's veth end (into the
// uplink); the sink on that same end counts what the relay delivered and, when
// asked, records how long each stamped frame took to come back; the bounce
// program sends every frame straight back (closed loop).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define STAMP_MAGIC 0x74766c78u /* "xlvt" */
#define STAMP_OFFSET 42         /* after Ethernet, IPv4 and UDP headers */
#define MAX_SAMPLES 65536

struct stamp {
  __u32 magic;
  __u32 reserved;
  __u64 sent_ns;
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 2); /* 0: frames, 1: bytes */
  __type(key, __u32);
  __type(value, __u64);
} sink_counters SEC(".maps");

const volatile __u32 generator_target_ifindex = 0;
/* Set by user space: record round-trip samples of stamped frames. */
volatile __u32 record_latency = 0;
__u64 sample_count = 0;
__u64 samples_ns[MAX_SAMPLES];

SEC("xdp")
int bench_generate(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  struct stamp* stamp = data + STAMP_OFFSET;
  if ((void*)(stamp + 1) <= data_end) {
    stamp->magic = STAMP_MAGIC;
    stamp->sent_ns = bpf_ktime_get_ns();
  }
  return bpf_redirect(generator_target_ifindex, 0);
}

static __always_inline void count(__u32 key, __u64 amount) {
  __u64* value = bpf_map_lookup_elem(&sink_counters, &key);
  if (value)
    *value += amount;
}

// Counts IPv4 frames (the benchmark's; the host stacks of a fresh namespace
// send only IPv6 and ARP noise) and drops everything.
SEC("xdp")
int bench_sink(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  unsigned char* bytes = data;
  if (data + 14 > data_end || bytes[12] != 0x08 || bytes[13] != 0x00)
    return XDP_DROP;
  count(0, 1);
  count(1, (__u64)(data_end - data));
  struct stamp* stamp = data + STAMP_OFFSET;
  if (record_latency && (void*)(stamp + 1) <= data_end && stamp->magic == STAMP_MAGIC) {
    __u64 index = __sync_fetch_and_add(&sample_count, 1);
    if (index < MAX_SAMPLES)
      samples_ns[index & (MAX_SAMPLES - 1)] = bpf_ktime_get_ns() - stamp->sent_ns;
  }
  return XDP_DROP;
}

// Closed loop: every IPv4 frame the relay sends out of the uplink is counted,
// gets its MAC addresses swapped and goes straight back (XDP_TX), so a fixed
// population of frames circulates uplink -> VM -> uplink until lost. On veth
// this runs in the relay's transmit context: the relay's CPU carries the
// whole loop and the relay is the bottleneck.
SEC("xdp")
int bench_bounce(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  unsigned char* bytes = data;
  if (data + 14 > data_end || bytes[12] != 0x08 || bytes[13] != 0x00)
    return XDP_DROP;
  count(0, 1);
  count(1, (__u64)(data_end - data));
  unsigned char mac[6];
  __builtin_memcpy(mac, bytes, 6);
  __builtin_memcpy(bytes, bytes + 6, 6);
  __builtin_memcpy(bytes + 6, mac, 6);
  return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
