/* The contract between the XDP steering program (bpf/xvio_steer.bpf.c) and the
 * agent (agent/steering, the relay): map names and layouts, the config record,
 * counter indexes and the metadata record written in front of redirected frames.
 * Included by BPF C and by C++; plain fixed-width types only. */
#ifndef XVIO_BPF_XVIO_SHARED_H
#define XVIO_BPF_XVIO_SHARED_H

#include <linux/types.h>

/* ---------------------------------------------------------------- map names
 * The kernel object names of the maps (at most 15 characters) and the file
 * names they are pinned under in the agent's bpffs directory. */
#define XVIO_MAP_NAME_PORTS "xvio_ports"       /* HASH: xvio_port_key -> xvio_port_value */
#define XVIO_MAP_NAME_XSKS "xvio_xsks"         /* XSKMAP: slot -> AF_XDP socket */
#define XVIO_MAP_NAME_CONFIG "xvio_config"     /* ARRAY[1]: struct xvio_config */
#define XVIO_MAP_NAME_TOEPLITZ "xvio_toeplitz" /* ARRAY[1]: struct xvio_toeplitz_table */
#define XVIO_MAP_NAME_COUNTERS "xvio_counters" /* PERCPU_ARRAY[1]: struct xvio_counters */
/* ARRAY[XVIO_PORT_INDEX_SLOTS], mmapable: struct xvio_port_slot */
#define XVIO_MAP_NAME_PORT_INDEX "xvio_port_index"

/* Program names (the C function names) and their ELF sections. The frags
 * variant is identical but loaded with BPF_F_XDP_HAS_FRAGS, for uplinks with an
 * MTU above one page; headers are still only parsed in the linear part. */
#define XVIO_PROGRAM_NAME_STEER "xvio_steer"             /* SEC("xdp") */
#define XVIO_PROGRAM_NAME_STEER_FRAGS "xvio_steer_frags" /* SEC("xdp.frags") */
#define XVIO_PROGRAM_SECTION_STEER "xdp"
#define XVIO_PROGRAM_SECTION_STEER_FRAGS "xdp.frags"

#define XVIO_PORT_MAP_MAX_ENTRIES 4096
#define XVIO_XSK_MAP_MAX_ENTRIES 1024

/* ---------------------------------------------------------------- port map
 * Destination MAC plus the outermost VLAN id (0 when untagged) selects the VM
 * port. For double-tagged frames the outer (S-)tag is the key; the inner tag
 * belongs to the VM and is reported in the metadata. */
struct xvio_port_key {
  __u8 mac[6];
  __u16 vlan_id; /* host byte order, 0..4095; 0 = untagged or priority-tagged */
};

/* Port value flags. */
#define XVIO_PORT_FLAG_DISABLED (1u << 0) /* frames for the port are dropped (and counted) */
/* Nobody reads the flow hash of the port's frames (one queue pair, no
 * HASH_REPORT offered): the program skips the Toeplitz hash and reports
 * hash_type NONE, hash_value 0. Without the flag, frames are hashed, so an
 * entry written by a writer that does not know the flag keeps its hash. The
 * hash is still computed when sockets_per_queue > 1 (it picks the socket). */
#define XVIO_PORT_FLAG_NO_HASH (1u << 1)

struct xvio_port_value {
  __u32 port_id; /* agent-chosen id, reported in xvio_metadata.port_id */
  __u32 flags;   /* XVIO_PORT_FLAG_* */
};

/* ---------------------------------------------------------------- port index
 * An open-addressed copy of xvio_ports that the program probes with plain
 * array loads (a hash map lookup costs four kernel function calls). The
 * agent (agent/steering/port_index.h) keeps it in line with xvio_ports,
 * which stays the authority:
 * - a key lives in one of the XVIO_PORT_INDEX_PROBES slots from its home
 *   slot (wrapping), or, when all of them are taken, only in xvio_ports;
 * - probing stops at the first EMPTY slot (the key is absent) and skips
 *   DELETED ones; after XVIO_PORT_INDEX_PROBES slots without the key or an
 *   EMPTY one, the program asks xvio_ports.
 * A slot is two 64-bit words, each written with one store: the value first,
 * then the key. The program reads key, value, key again and falls back to
 * xvio_ports if the key changed in between. */
#define XVIO_PORT_INDEX_SLOTS 8192u /* a power of two, twice XVIO_PORT_MAP_MAX_ENTRIES */
#define XVIO_PORT_INDEX_SLOT_BITS 13
#define XVIO_PORT_INDEX_PROBES 8u
#define XVIO_PORT_SLOT_EMPTY 0ull
#define XVIO_PORT_SLOT_DELETED (~0ull)
/* Set in every used slot key (in the VLAN field, whose ids end at 4095), so
 * that no key equals EMPTY or DELETED. */
#define XVIO_PORT_SLOT_USED (1ull << 63)

struct xvio_port_slot {
  __u64 key;   /* XVIO_PORT_SLOT_EMPTY, _DELETED, or xvio_port_slot_key() */
  __u64 value; /* port_id | (__u64)flags << 32 */
};

/* The slot key of (MAC, VLAN): MAC in bits 0..47 (first byte highest),
 * VLAN id in bits 48..59, XVIO_PORT_SLOT_USED. */
static inline __attribute__((always_inline)) __u64 xvio_port_slot_key(const __u8* mac,
                                                                      __u16 vlan_id) {
  return ((__u64)mac[0] << 40) | ((__u64)mac[1] << 32) | ((__u64)mac[2] << 24) |
         ((__u64)mac[3] << 16) | ((__u64)mac[4] << 8) | (__u64)mac[5] |
         ((__u64)(vlan_id & 0x0fff) << 48) | XVIO_PORT_SLOT_USED;
}

/* The key's home slot: a multiplicative (Fibonacci) hash, top bits. */
static inline __attribute__((always_inline)) __u32 xvio_port_slot_home(__u64 slot_key) {
  return (__u32)((slot_key * 0x9e3779b97f4a7c15ull) >> (64 - XVIO_PORT_INDEX_SLOT_BITS));
}

/* port_id reported for frames that are redirected to the agent by a policy
 * (broadcast, multicast, unknown unicast, malformed) rather than for a port. */
#define XVIO_PORT_ID_NONE 0xffffffffu

/* ---------------------------------------------------------------- config
 * What to do with a class of frames. PASS hands the frame to the host stack
 * untouched, DROP drops it, REDIRECT steers it into the AF_XDP socket with
 * metadata (port_id = the classified port, or XVIO_PORT_ID_NONE). */
enum xvio_action {
  XVIO_ACTION_PASS = 0,
  XVIO_ACTION_DROP = 1,
  XVIO_ACTION_REDIRECT = 2,
};

/* Hash field selection uses the virtio-net RSS bits (linux/virtio_net.h
 * VIRTIO_NET_RSS_HASH_TYPE_*), with the virtio precedence: a TCPv6 frame gets
 * TCPV6_EX if that bit is set, else TCPV6, else IPV6_EX, else IPV6, else no
 * hash (UDP likewise; other IPv6 frames IPV6_EX, else IPV6; IPv4 frames TCPV4/
 * UDPV4, else IPV4). The _EX types hash the Home Address destination option
 * (instead of the source) and the type 2 routing header address (instead of
 * the destination) when the frame carries them; the parser only looks for
 * them while an _EX bit is set. */
#define XVIO_HASH_FIELDS_IPV4 (1u << 0)
#define XVIO_HASH_FIELDS_TCPV4 (1u << 1)
#define XVIO_HASH_FIELDS_UDPV4 (1u << 2)
#define XVIO_HASH_FIELDS_IPV6 (1u << 3)
#define XVIO_HASH_FIELDS_TCPV6 (1u << 4)
#define XVIO_HASH_FIELDS_UDPV6 (1u << 5)
#define XVIO_HASH_FIELDS_IPV6_EX (1u << 6)
#define XVIO_HASH_FIELDS_TCPV6_EX (1u << 7)
#define XVIO_HASH_FIELDS_UDPV6_EX (1u << 8)
#define XVIO_HASH_FIELDS_EX 0x1c0u /* the three _EX bits */
#define XVIO_HASH_FIELDS_ALL 0x1ffu
/* What NICs and Linux use by default: every type except the _EX ones. */
#define XVIO_HASH_FIELDS_DEFAULT 0x3fu

/* Config flags. */
/* Order (address, port) pairs canonically before hashing, so both directions
 * of a flow get the same hash (and therefore the same queue). */
#define XVIO_CONFIG_FLAG_SYMMETRIC_HASH (1u << 0)

#define XVIO_TOEPLITZ_KEY_BYTES 40
/* Longest hash input: IPv6 source + destination + two ports. */
#define XVIO_TOEPLITZ_INPUT_MAX_BYTES 36

/* How many IPv6 extension headers the parser walks at most. The configured
 * limit is clamped to XVIO_IPV6_EXT_HEADER_LIMIT_MAX; 0 selects the default. */
#define XVIO_IPV6_EXT_HEADER_LIMIT_DEFAULT 4
#define XVIO_IPV6_EXT_HEADER_LIMIT_MAX 8

struct xvio_config {
  __u32 hash_fields; /* XVIO_HASH_FIELDS_* */
  __u32 flags;       /* XVIO_CONFIG_FLAG_* */
  /* AF_XDP sockets sharing one UMEM per receive queue. 0 or 1: the socket
   * for queue q sits in xvio_xsks[q]; N > 1: in xvio_xsks[q * N + hash % N]. */
  __u32 sockets_per_queue;
  __u32 ipv6_ext_header_limit; /* see XVIO_IPV6_EXT_HEADER_LIMIT_* */
  __u8 broadcast_action;       /* enum xvio_action, ff:ff:ff:ff:ff:ff */
  __u8 multicast_action;       /* enum xvio_action, other group addresses */
  __u8 unknown_unicast_action; /* enum xvio_action, unicast with no port entry */
  /* enum xvio_action for frames that fail L3/L4 parsing (after L2 classified
   * them as wanted): REDIRECT delivers them unhashed with XVIO_META_FLAG_PARSE_ERROR. */
  __u8 malformed_action;
  /* The key the Toeplitz table was built from; the BPF side never reads it,
   * it lets a restarted agent report what it adopted. */
  __u8 hash_key[XVIO_TOEPLITZ_KEY_BYTES];
};

/* Toeplitz hash as table lookups: contribution[i][v] is the XOR of the 32-bit
 * key windows selected by the set bits of value v at input byte position i, so
 * hash = XOR over i of contribution[i][input[i]]. Built by the agent from the
 * key (agent/steering/toeplitz.h). */
struct xvio_toeplitz_table {
  __u32 contribution[XVIO_TOEPLITZ_INPUT_MAX_BYTES][256];
};

/* ---------------------------------------------------------------- counters
 * Parse errors: the reason a frame could not be parsed. Also reported in
 * xvio_metadata.parse_error when a malformed frame is redirected. */
enum xvio_parse_error {
  XVIO_PARSE_ERROR_NONE = 0,
  XVIO_PARSE_ERROR_ETHERNET_TRUNCATED,
  XVIO_PARSE_ERROR_VLAN_TRUNCATED,
  XVIO_PARSE_ERROR_TOO_MANY_VLAN_TAGS, /* a third 802.1Q/802.1ad tag */
  XVIO_PARSE_ERROR_ARP_TRUNCATED,
  XVIO_PARSE_ERROR_IPV4_TRUNCATED, /* fewer than 20 bytes, or options cut off */
  XVIO_PARSE_ERROR_IPV4_BAD_VERSION,
  XVIO_PARSE_ERROR_IPV4_BAD_IHL,          /* IHL < 5 */
  XVIO_PARSE_ERROR_IPV4_BAD_TOTAL_LENGTH, /* < header length or beyond the frame */
  XVIO_PARSE_ERROR_IPV6_TRUNCATED,
  XVIO_PARSE_ERROR_IPV6_BAD_VERSION,
  XVIO_PARSE_ERROR_IPV6_BAD_PAYLOAD_LENGTH, /* beyond the frame */
  XVIO_PARSE_ERROR_IPV6_EXT_TRUNCATED,
  XVIO_PARSE_ERROR_IPV6_TOO_MANY_EXT_HEADERS, /* chain longer than the limit */
  XVIO_PARSE_ERROR_TCP_TRUNCATED,
  XVIO_PARSE_ERROR_TCP_BAD_DATA_OFFSET, /* data offset < 5 */
  XVIO_PARSE_ERROR_UDP_TRUNCATED,
  XVIO_PARSE_ERROR_ICMP_TRUNCATED,
  XVIO_PARSE_ERROR_ICMPV6_TRUNCATED,
  XVIO_PARSE_ERROR_COUNT
};

/* Indexes into xvio_counters.count. Every frame counts RECEIVED and exactly one
 * of REDIRECTED, PASSED, DROPPED; the rest say why. */
enum xvio_counter {
  XVIO_COUNTER_RECEIVED = 0,
  XVIO_COUNTER_REDIRECTED,
  XVIO_COUNTER_PASSED,
  XVIO_COUNTER_DROPPED,
  XVIO_COUNTER_BROADCAST,            /* classified as broadcast (any verdict) */
  XVIO_COUNTER_MULTICAST,            /* classified as multicast (any verdict) */
  XVIO_COUNTER_UNKNOWN_UNICAST,      /* unicast without a port entry (any verdict) */
  XVIO_COUNTER_PORT_DISABLED,        /* dropped: the port has XVIO_PORT_FLAG_DISABLED */
  XVIO_COUNTER_NO_SOCKET,            /* passed: no AF_XDP socket in the chosen slot */
  XVIO_COUNTER_NO_CONFIG,            /* passed: the config map could not be read */
  XVIO_COUNTER_METADATA_UNSUPPORTED, /* redirected without metadata (adjust_meta failed) */
  XVIO_COUNTER_MALFORMED,            /* any parse error; the reason is counted below */
  /* XVIO_COUNTER_PARSE_ERROR(reason) for reason 1..XVIO_PARSE_ERROR_COUNT-1 */
  XVIO_COUNTER_PARSE_ERROR_BASE,
  XVIO_COUNTER_COUNT = XVIO_COUNTER_PARSE_ERROR_BASE + XVIO_PARSE_ERROR_COUNT - 1
};
#define XVIO_COUNTER_PARSE_ERROR(reason) ((int)XVIO_COUNTER_PARSE_ERROR_BASE + (int)(reason)-1)

/* One per-CPU record; readers sum the CPUs. */
struct xvio_counters {
  __u64 count[XVIO_COUNTER_COUNT];
};

/* ---------------------------------------------------------------- metadata
 * Written with bpf_xdp_adjust_meta directly in front of every frame that is
 * redirected to an AF_XDP socket (never in front of frames passed to the host).
 * In the UMEM it ends where the frame starts: the agent reads it at
 * (frame address - sizeof(struct xvio_metadata)). The magic is the LAST field,
 * adjacent to the frame, so a reader can check it first at (frame - 4) and a
 * later version may grow the record at its front. */
#define XVIO_METADATA_MAGIC 0x78760000u /* "xv" in the upper half */
#define XVIO_METADATA_VERSION 1u
#define XVIO_METADATA_MAGIC_VERSION (XVIO_METADATA_MAGIC | XVIO_METADATA_VERSION)

/* Hash types, numbered as virtio-net VIRTIO_NET_HASH_REPORT_* (so the agent
 * can pass them to a guest that negotiated VIRTIO_NET_F_HASH_REPORT as is). */
enum xvio_hash_type {
  XVIO_HASH_TYPE_NONE = 0,
  XVIO_HASH_TYPE_IPV4 = 1,
  XVIO_HASH_TYPE_TCPV4 = 2,
  XVIO_HASH_TYPE_UDPV4 = 3,
  XVIO_HASH_TYPE_IPV6 = 4,
  XVIO_HASH_TYPE_TCPV6 = 5,
  XVIO_HASH_TYPE_UDPV6 = 6,
  XVIO_HASH_TYPE_IPV6_EX = 7, /* only with XVIO_HASH_FIELDS_IPV6_EX */
  XVIO_HASH_TYPE_TCPV6_EX = 8,
  XVIO_HASH_TYPE_UDPV6_EX = 9,
};

/* xvio_metadata.flags */
#define XVIO_META_FLAG_VLAN_OUTER (1u << 0) /* outer_vlan_id is valid */
#define XVIO_META_FLAG_VLAN_INNER (1u << 1) /* inner_vlan_id is valid */
#define XVIO_META_FLAG_BROADCAST (1u << 2)
#define XVIO_META_FLAG_MULTICAST (1u << 3)
#define XVIO_META_FLAG_UNKNOWN_UNICAST (1u << 4)
#define XVIO_META_FLAG_ARP (1u << 5)
#define XVIO_META_FLAG_IPV4 (1u << 6)                /* l3_offset points at an IPv4 header */
#define XVIO_META_FLAG_IPV6 (1u << 7)                /* l3_offset points at an IPv6 header */
#define XVIO_META_FLAG_IPV4_OPTIONS (1u << 8)        /* IHL > 5 */
#define XVIO_META_FLAG_IPV6_EXT_HEADERS (1u << 9)    /* at least one extension header walked */
#define XVIO_META_FLAG_FRAGMENT (1u << 10)           /* an IPv4/IPv6 fragment (hashed 2-tuple) */
#define XVIO_META_FLAG_FRAGMENT_FIRST (1u << 11)     /* ... the first one (offset 0) */
#define XVIO_META_FLAG_L4 (1u << 12)                 /* l4_offset points at the L4 header */
#define XVIO_META_FLAG_SYMMETRIC_HASH (1u << 13)     /* hash_value is direction-independent */
#define XVIO_META_FLAG_PARSE_ERROR (1u << 14)        /* parse_error says why; no hash */
#define XVIO_META_FLAG_IPV6_HOME_ADDRESS (1u << 15)  /* a Home Address option was found */
#define XVIO_META_FLAG_IPV6_TYPE2_ROUTING (1u << 16) /* a type 2 routing header was found */

struct xvio_metadata {
  __u32 port_id;       /* xvio_port_value.port_id or XVIO_PORT_ID_NONE */
  __u32 hash_value;    /* Toeplitz hash; 0 when hash_type is NONE */
  __u32 flags;         /* XVIO_META_FLAG_* */
  __u16 hash_type;     /* enum xvio_hash_type */
  __u16 l3_offset;     /* bytes from frame start to the IP/ARP header; 0 if none */
  __u16 l4_offset;     /* bytes from frame start to the L4 header; valid with FLAG_L4 */
  __u16 outer_vlan_id; /* valid with FLAG_VLAN_OUTER */
  __u16 inner_vlan_id; /* valid with FLAG_VLAN_INNER */
  __u8 l4_protocol;    /* IPPROTO_* of the transport header (after extension headers) */
  __u8 parse_error;    /* enum xvio_parse_error */
  __u32 magic_version; /* XVIO_METADATA_MAGIC_VERSION; last, adjacent to the frame */
};

#ifdef __cplusplus
static_assert(sizeof(struct xvio_metadata) == 28, "metadata layout is part of the ABI");
static_assert(sizeof(struct xvio_metadata) % 4 == 0, "bpf_xdp_adjust_meta needs 4-byte multiples");
static_assert(sizeof(struct xvio_port_key) == 8, "port map key layout");
static_assert(sizeof(struct xvio_port_value) == 8, "port map value layout");
static_assert(sizeof(struct xvio_config) == 60, "config layout");
static_assert(sizeof(struct xvio_port_slot) == 16, "port index slot layout");
static_assert(XVIO_PORT_INDEX_SLOTS == 1u << XVIO_PORT_INDEX_SLOT_BITS, "slot count");
#else
_Static_assert(sizeof(struct xvio_metadata) == 28, "metadata layout is part of the ABI");
_Static_assert(sizeof(struct xvio_metadata) % 4 == 0, "bpf_xdp_adjust_meta needs 4-byte multiples");
_Static_assert(sizeof(struct xvio_port_key) == 8, "port map key layout");
_Static_assert(sizeof(struct xvio_config) == 60, "config layout");
_Static_assert(sizeof(struct xvio_port_slot) == 16, "port index slot layout");
#endif

#endif /* XVIO_BPF_XVIO_SHARED_H */
