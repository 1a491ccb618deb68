/* XDP steering program: parse (Ethernet, VLAN, ARP, IPv4, IPv6 + extension
 * headers, TCP/UDP/ICMP), classify by destination MAC + VLAN, Toeplitz-hash and
 * redirect frames for VM ports into AF_XDP sockets with xvio_metadata in front.
 * Frames for no VM go to the host stack untouched. Layouts: bpf/xvio_shared.h. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>

/* after linux/bpf.h, which they build on */
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/xvio_shared.h"

char LICENSE[] SEC("license") = "GPL";

/* Protocol constants used here, spelled out so the program does not depend on
 * kernel-internal headers. */
#define ETH_HEADER_BYTES 14
#define VLAN_HEADER_BYTES 4
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_VLAN_8021Q 0x8100
#define ETHERTYPE_VLAN_8021AD 0x88a8
#define ETHERTYPE_IPV6 0x86dd
#define ARP_FIXED_HEADER_BYTES 8
#define IPV4_MIN_HEADER_BYTES 20
#define IPV4_FLAG_MORE_FRAGMENTS 0x2000
#define IPV4_FRAGMENT_OFFSET_MASK 0x1fff
#define IPV6_HEADER_BYTES 40
#define IPV6_FRAGMENT_HEADER_BYTES 8
#define IPV6_FRAGMENT_OFFSET_MASK 0xfff8
#define IPV6_FRAGMENT_MORE 0x0001
#define IPV6_NEXT_HOP_BY_HOP 0
#define IPV6_NEXT_ROUTING 43
#define IPV6_NEXT_FRAGMENT 44
#define IPV6_NEXT_DESTINATION_OPTIONS 60
#define IPV6_OPTION_PAD1 0
#define IPV6_OPTION_HOME_ADDRESS 0xc9 /* RFC 6275 */
#define IPV6_HOME_ADDRESS_OPTION_BYTES 18
#define IPV6_ROUTING_TYPE2 2 /* RFC 6275: one address, 24 bytes */
#define IPV6_ROUTING_TYPE2_BYTES 24
#define IPV6_OPTIONS_SCANNED_MAX 8
#define TCP_MIN_HEADER_BYTES 20
#define UDP_HEADER_BYTES 8
#define ICMP_MIN_HEADER_BYTES 8
#define IPPROTO_ICMPV6_NUMBER 58 /* linux/in6.h, which clashes with linux/in.h */

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, XVIO_PORT_MAP_MAX_ENTRIES);
  __type(key, struct xvio_port_key);
  __type(value, struct xvio_port_value);
} xvio_ports SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, XVIO_PORT_INDEX_SLOTS);
  __uint(map_flags, BPF_F_MMAPABLE);
  __type(key, __u32);
  __type(value, struct xvio_port_slot);
} xvio_port_index SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, XVIO_XSK_MAP_MAX_ENTRIES);
  __type(key, __u32);
  __type(value, __u32);
} xvio_xsks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct xvio_config);
} xvio_config SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct xvio_toeplitz_table);
} xvio_toeplitz SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct xvio_counters);
} xvio_counters SEC(".maps");

/* Everything learned about one frame while parsing it. Only offsets and
 * values, no packet pointers: the IPv6 extension header walk is a global
 * function that the verifier checks once, and it re-derives pointers from
 * the context. Addresses and ports stay in network byte order (hashed as on
 * the wire). */
struct parse_state {
  __u32 position; /* offset of the next header to parse */
  /* the linear part of the frame: header reads are checked against it, and
   * so are length fields unless the frame may have fragments (multi_buffer) */
  __u32 linear_bytes;
  __u16 ethertype;
  __u8 ip_version; /* 0, 4 or 6 */
  __u8 has_ports;
  __u8 multi_buffer; /* the xdp.frags build: frames may continue in fragments */
  __u8 padding[3];
  __u32 source_address[4];
  __u32 destination_address[4];
  __u16 source_port;
  __u16 destination_port;
  /* for the _EX hash types: Home Address option, type 2 routing address */
  __u32 home_address[4];
  __u32 routing_address[4];
  __u8 destination_mac[6];
  __u16 padding_mac;
  struct xvio_metadata meta;
};

/* Offsets are masked to this before each use so that every path hands the
 * verifier the same range (keeps state pruning effective in the IPv6 walk). */
#define OFFSET_MASK 0x1fff

static __always_inline void count(struct xvio_counters* counters, __u32 index) {
  /* the empty asm pins `index` in one register, so clang cannot move the
   * bound check to a copy the verifier does not connect to the access */
  asm volatile("" : "+r"(index));
  if (counters && index < XVIO_COUNTER_COUNT)
    counters->count[index]++;
}

static __always_inline __u8* at(struct xdp_md* ctx, __u32 offset) {
  return (__u8*)(long)ctx->data + (offset & OFFSET_MASK);
}

#define END(ctx) ((void*)(long)(ctx)->data_end)

/* Whether the frame, fragments of a multi-buffer frame included, reaches
 * `end_offset`. The whole length costs a helper call, so it is only asked
 * for when the linear part is too short and the frame may have fragments. */
static __always_inline int frame_reaches(struct xdp_md* ctx, const struct parse_state* s,
                                         __u32 end_offset) {
  if (end_offset <= s->linear_bytes)
    return 1;
  return s->multi_buffer && end_offset <= (__u32)bpf_xdp_get_buff_len(ctx);
}

/* ------------------------------------------------------------------ L2 */

static __always_inline int is_vlan_ethertype(__u16 ethertype) {
  return ethertype == ETHERTYPE_VLAN_8021Q || ethertype == ETHERTYPE_VLAN_8021AD;
}

/* One tag: TCI, then the next ethertype. */
static __always_inline int parse_vlan_tag(struct xdp_md* ctx, struct parse_state* s,
                                          __u16* vlan_id) {
  __u8* tag = at(ctx, s->position);
  if ((void*)(tag + VLAN_HEADER_BYTES) > END(ctx))
    return XVIO_PARSE_ERROR_VLAN_TRUNCATED;
  *vlan_id = bpf_ntohs(*(__u16*)tag) & 0x0fff;
  s->ethertype = bpf_ntohs(*(__u16*)(tag + 2));
  s->position += VLAN_HEADER_BYTES;
  return XVIO_PARSE_ERROR_NONE;
}

/* Ethernet header and up to two VLAN tags (802.1Q or 802.1ad, either order). */
static __always_inline int parse_l2(struct xdp_md* ctx, struct parse_state* s) {
  __u8* eth = (__u8*)(long)ctx->data;
  __u16 vlan_id = 0;
  int error;

  s->linear_bytes = (__u32)(ctx->data_end - ctx->data);
  if ((void*)(eth + ETH_HEADER_BYTES) > END(ctx))
    return XVIO_PARSE_ERROR_ETHERNET_TRUNCATED;
  __builtin_memcpy(s->destination_mac, eth, 6);
  s->ethertype = bpf_ntohs(*(__u16*)(eth + 12));
  s->position = ETH_HEADER_BYTES;

  if (!is_vlan_ethertype(s->ethertype))
    return XVIO_PARSE_ERROR_NONE;
  error = parse_vlan_tag(ctx, s, &vlan_id);
  if (error)
    return error;
  s->meta.outer_vlan_id = vlan_id;
  s->meta.flags |= XVIO_META_FLAG_VLAN_OUTER;
  if (!is_vlan_ethertype(s->ethertype))
    return XVIO_PARSE_ERROR_NONE;
  error = parse_vlan_tag(ctx, s, &vlan_id);
  if (error)
    return error;
  s->meta.inner_vlan_id = vlan_id;
  s->meta.flags |= XVIO_META_FLAG_VLAN_INNER;
  if (is_vlan_ethertype(s->ethertype))
    return XVIO_PARSE_ERROR_TOO_MANY_VLAN_TAGS;
  return XVIO_PARSE_ERROR_NONE;
}

/* ------------------------------------------------------------------ L3 */

static __always_inline int parse_arp(struct xdp_md* ctx, struct parse_state* s) {
  __u8* arp = at(ctx, s->position);
  __u32 addresses_bytes;
  if ((void*)(arp + ARP_FIXED_HEADER_BYTES) > END(ctx))
    return XVIO_PARSE_ERROR_ARP_TRUNCATED;
  /* sender and target hardware + protocol addresses follow the fixed part */
  addresses_bytes = 2 * ((__u32)arp[4] + (__u32)arp[5]);
  if ((void*)(arp + ARP_FIXED_HEADER_BYTES + addresses_bytes) > END(ctx))
    return XVIO_PARSE_ERROR_ARP_TRUNCATED;
  s->meta.flags |= XVIO_META_FLAG_ARP;
  return XVIO_PARSE_ERROR_NONE;
}

static __always_inline int parse_ipv4(struct xdp_md* ctx, struct parse_state* s) {
  __u8* ip = at(ctx, s->position);
  __u32 header_bytes, total_length, fragment;
  if ((void*)(ip + IPV4_MIN_HEADER_BYTES) > END(ctx))
    return XVIO_PARSE_ERROR_IPV4_TRUNCATED;
  if ((ip[0] >> 4) != 4)
    return XVIO_PARSE_ERROR_IPV4_BAD_VERSION;
  header_bytes = (ip[0] & 0x0f) * 4;
  if (header_bytes < IPV4_MIN_HEADER_BYTES)
    return XVIO_PARSE_ERROR_IPV4_BAD_IHL;
  if ((void*)(ip + header_bytes) > END(ctx))
    return XVIO_PARSE_ERROR_IPV4_TRUNCATED;
  total_length = bpf_ntohs(*(__u16*)(ip + 2));
  if (total_length < header_bytes || !frame_reaches(ctx, s, s->position + total_length))
    return XVIO_PARSE_ERROR_IPV4_BAD_TOTAL_LENGTH;

  s->ip_version = 4;
  s->meta.flags |= XVIO_META_FLAG_IPV4;
  if (header_bytes > IPV4_MIN_HEADER_BYTES)
    s->meta.flags |= XVIO_META_FLAG_IPV4_OPTIONS;
  s->meta.l4_protocol = ip[9];
  s->source_address[0] = *(__u32*)(ip + 12);
  s->destination_address[0] = *(__u32*)(ip + 16);

  fragment = bpf_ntohs(*(__u16*)(ip + 6));
  if (fragment & (IPV4_FLAG_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET_MASK)) {
    s->meta.flags |= XVIO_META_FLAG_FRAGMENT;
    if (!(fragment & IPV4_FRAGMENT_OFFSET_MASK))
      s->meta.flags |= XVIO_META_FLAG_FRAGMENT_FIRST;
  }
  s->position += header_bytes;
  return XVIO_PARSE_ERROR_NONE;
}

static __always_inline int is_ipv6_extension_header(__u8 next_header) {
  return next_header == IPV6_NEXT_HOP_BY_HOP || next_header == IPV6_NEXT_ROUTING ||
         next_header == IPV6_NEXT_FRAGMENT || next_header == IPV6_NEXT_DESTINATION_OPTIONS;
}

/* Looks for a Home Address option (RFC 6275) among the first options of the
 * destination options header at `header_offset`. A global function: the
 * verifier checks its bounded option scan once, not once per walk step. */
__attribute__((noinline)) int xvio_find_home_address(struct xdp_md* ctx, struct parse_state* s,
                                                     __u32 header_offset, __u32 header_bytes) {
  __u32 offset = 2, scanned;
  if (!s)
    return 0;
  for (scanned = 0; scanned < IPV6_OPTIONS_SCANNED_MAX; scanned++) {
    __u8* option;
    if (offset + 2 > header_bytes || offset > OFFSET_MASK)
      return 0;
    option = at(ctx, header_offset + offset);
    if ((void*)(option + 2) > END(ctx))
      return 0;
    if (option[0] == IPV6_OPTION_PAD1) {
      offset += 1;
      continue;
    }
    if (option[0] == IPV6_OPTION_HOME_ADDRESS && option[1] == 16) {
      if (offset + IPV6_HOME_ADDRESS_OPTION_BYTES > header_bytes ||
          (void*)(option + IPV6_HOME_ADDRESS_OPTION_BYTES) > END(ctx))
        return 0;
      __builtin_memcpy(s->home_address, option + 2, 16);
      s->meta.flags |= XVIO_META_FLAG_IPV6_HOME_ADDRESS;
      return 0;
    }
    offset += 2 + (__u32)option[1];
  }
  return 0;
}

/* A type 2 routing header (one address, segments left 1) names the address
 * the _EX hash types use as destination. */
static __always_inline void note_type2_routing(struct xdp_md* ctx, struct parse_state* s, __u8* ext,
                                               __u32 length_bytes) {
  if (length_bytes != IPV6_ROUTING_TYPE2_BYTES || ext[2] != IPV6_ROUTING_TYPE2 || ext[3] != 1)
    return;
  if ((void*)(ext + IPV6_ROUTING_TYPE2_BYTES) > END(ctx))
    return;
  __builtin_memcpy(s->routing_address, ext + 8, 16);
  s->meta.flags |= XVIO_META_FLAG_IPV6_TYPE2_ROUTING;
}

/* Walks at most `limit` extension headers; longer chains are an error (the
 * walk is bounded so that its cost per frame is). Leaves meta.l4_protocol at
 * the first non-extension next-header value. A non-first fragment stops the
 * walk: what follows its fragment header is payload, not headers. A global
 * function, called only when there is an extension header: the verifier
 * checks the loop once (inlined, its states multiplied past the 1M
 * instruction limit), and the common frame pays no call. */
__attribute__((noinline)) int xvio_walk_ipv6_extension_headers(struct xdp_md* ctx,
                                                               struct parse_state* s, __u32 limit,
                                                               int want_mobility_addresses) {
  __u8 next_header;
  __u32 walked;

  if (!s)
    return XVIO_PARSE_ERROR_IPV6_EXT_TRUNCATED;
  next_header = s->meta.l4_protocol;

  for (walked = 0; walked < XVIO_IPV6_EXT_HEADER_LIMIT_MAX; walked++) {
    __u8* ext;
    if (!is_ipv6_extension_header(next_header))
      break;
    if (walked >= limit)
      return XVIO_PARSE_ERROR_IPV6_TOO_MANY_EXT_HEADERS;
    ext = at(ctx, s->position);
    if ((void*)(ext + 8) > END(ctx))
      return XVIO_PARSE_ERROR_IPV6_EXT_TRUNCATED;
    s->meta.flags |= XVIO_META_FLAG_IPV6_EXT_HEADERS;
    if (next_header == IPV6_NEXT_FRAGMENT) {
      __u16 fragment = bpf_ntohs(*(__u16*)(ext + 2));
      next_header = ext[0];
      s->position += IPV6_FRAGMENT_HEADER_BYTES;
      if (fragment & IPV6_FRAGMENT_OFFSET_MASK) {
        s->meta.flags |= XVIO_META_FLAG_FRAGMENT;
        s->meta.l4_protocol = next_header;
        return XVIO_PARSE_ERROR_NONE;
      }
      /* offset 0 without M is an atomic fragment (RFC 8200): not a fragment */
      if (fragment & IPV6_FRAGMENT_MORE)
        s->meta.flags |= XVIO_META_FLAG_FRAGMENT | XVIO_META_FLAG_FRAGMENT_FIRST;
    } else {
      __u32 length_bytes = ((__u32)ext[1] + 1) * 8;
      /* mobility addresses cost an option scan: only when an _EX type wants them */
      if (want_mobility_addresses && next_header == IPV6_NEXT_ROUTING)
        note_type2_routing(ctx, s, ext, length_bytes);
      else if (want_mobility_addresses && next_header == IPV6_NEXT_DESTINATION_OPTIONS)
        xvio_find_home_address(ctx, s, s->position, length_bytes);
      next_header = ext[0];
      s->position += length_bytes;
      if ((void*)at(ctx, s->position) > END(ctx) || s->position > OFFSET_MASK)
        return XVIO_PARSE_ERROR_IPV6_EXT_TRUNCATED;
    }
  }
  if (is_ipv6_extension_header(next_header))
    return XVIO_PARSE_ERROR_IPV6_TOO_MANY_EXT_HEADERS;
  s->meta.l4_protocol = next_header;
  return XVIO_PARSE_ERROR_NONE;
}

static __always_inline int parse_ipv6(struct xdp_md* ctx, struct parse_state* s, __u32 limit,
                                      int want_mobility_addresses) {
  __u8* ip = at(ctx, s->position);
  if ((void*)(ip + IPV6_HEADER_BYTES) > END(ctx))
    return XVIO_PARSE_ERROR_IPV6_TRUNCATED;
  if ((ip[0] >> 4) != 6)
    return XVIO_PARSE_ERROR_IPV6_BAD_VERSION;
  if (!frame_reaches(ctx, s, s->position + IPV6_HEADER_BYTES + bpf_ntohs(*(__u16*)(ip + 4))))
    return XVIO_PARSE_ERROR_IPV6_BAD_PAYLOAD_LENGTH;

  s->ip_version = 6;
  s->meta.flags |= XVIO_META_FLAG_IPV6;
  s->meta.l4_protocol = ip[6];
  __builtin_memcpy(s->source_address, ip + 8, 16);
  __builtin_memcpy(s->destination_address, ip + 24, 16);
  s->position += IPV6_HEADER_BYTES;

  if (!is_ipv6_extension_header(s->meta.l4_protocol))
    return XVIO_PARSE_ERROR_NONE;
  if (limit == 0)
    limit = XVIO_IPV6_EXT_HEADER_LIMIT_DEFAULT;
  if (limit > XVIO_IPV6_EXT_HEADER_LIMIT_MAX)
    limit = XVIO_IPV6_EXT_HEADER_LIMIT_MAX;
  return xvio_walk_ipv6_extension_headers(ctx, s, limit, want_mobility_addresses);
}

/* ------------------------------------------------------------------ L4 */

static __always_inline int parse_tcp(struct xdp_md* ctx, struct parse_state* s) {
  __u8* tcp = at(ctx, s->position);
  __u32 header_bytes;
  if ((void*)(tcp + TCP_MIN_HEADER_BYTES) > END(ctx))
    return XVIO_PARSE_ERROR_TCP_TRUNCATED;
  header_bytes = (tcp[12] >> 4) * 4;
  if (header_bytes < TCP_MIN_HEADER_BYTES)
    return XVIO_PARSE_ERROR_TCP_BAD_DATA_OFFSET;
  if ((void*)(tcp + header_bytes) > END(ctx))
    return XVIO_PARSE_ERROR_TCP_TRUNCATED;
  s->source_port = *(__u16*)tcp;
  s->destination_port = *(__u16*)(tcp + 2);
  s->has_ports = 1;
  return XVIO_PARSE_ERROR_NONE;
}

static __always_inline int parse_udp(struct xdp_md* ctx, struct parse_state* s) {
  __u8* udp = at(ctx, s->position);
  if ((void*)(udp + UDP_HEADER_BYTES) > END(ctx))
    return XVIO_PARSE_ERROR_UDP_TRUNCATED;
  s->source_port = *(__u16*)udp;
  s->destination_port = *(__u16*)(udp + 2);
  s->has_ports = 1;
  return XVIO_PARSE_ERROR_NONE;
}

static __always_inline int parse_icmp(struct xdp_md* ctx, struct parse_state* s,
                                      int error_if_truncated) {
  __u8* icmp = at(ctx, s->position);
  if ((void*)(icmp + ICMP_MIN_HEADER_BYTES) > END(ctx))
    return error_if_truncated;
  return XVIO_PARSE_ERROR_NONE;
}

static __always_inline int parse_l4(struct xdp_md* ctx, struct parse_state* s) {
  __u8 protocol = s->meta.l4_protocol;
  int error;

  /* a non-first fragment carries payload where the L4 header would be */
  if ((s->meta.flags & XVIO_META_FLAG_FRAGMENT) && !(s->meta.flags & XVIO_META_FLAG_FRAGMENT_FIRST))
    return XVIO_PARSE_ERROR_NONE;
  if (protocol == IPPROTO_TCP)
    error = parse_tcp(ctx, s);
  else if (protocol == IPPROTO_UDP)
    error = parse_udp(ctx, s);
  else if (protocol == IPPROTO_ICMP && s->ip_version == 4)
    error = parse_icmp(ctx, s, XVIO_PARSE_ERROR_ICMP_TRUNCATED);
  else if (protocol == IPPROTO_ICMPV6_NUMBER && s->ip_version == 6)
    error = parse_icmp(ctx, s, XVIO_PARSE_ERROR_ICMPV6_TRUNCATED);
  else
    return XVIO_PARSE_ERROR_NONE; /* another transport: no L4 offset, 2-tuple hash */
  if (error)
    return error;
  s->meta.flags |= XVIO_META_FLAG_L4;
  s->meta.l4_offset = (__u16)s->position;
  return XVIO_PARSE_ERROR_NONE;
}

/* L3 and L4 of a frame whose L2 part parse_l2 parsed. */
static __always_inline int parse_network(struct xdp_md* ctx, struct parse_state* s,
                                         __u32 ipv6_ext_header_limit, __u32 hash_fields) {
  int error;
  s->meta.l3_offset = (__u16)s->position;
  if (s->ethertype == ETHERTYPE_ARP)
    return parse_arp(ctx, s);
  if (s->ethertype == ETHERTYPE_IPV4)
    error = parse_ipv4(ctx, s);
  else if (s->ethertype == ETHERTYPE_IPV6)
    error = parse_ipv6(ctx, s, ipv6_ext_header_limit, hash_fields & XVIO_HASH_FIELDS_EX);
  else {
    s->meta.l3_offset = 0; /* not a protocol we parse: L2 only, no hash */
    return XVIO_PARSE_ERROR_NONE;
  }
  if (error)
    return error;
  return parse_l4(ctx, s);
}

/* ------------------------------------------------------------------ hash */

/* The contributions of the 4 bytes of `word` (network order, as on the wire)
 * at input positions position..position+3. */
static __always_inline __u32 toeplitz_word(const struct xvio_toeplitz_table* table, __u32 position,
                                           __u32 word) {
  const __u8* bytes = (const __u8*)&word;
  return table->contribution[position][bytes[0]] ^ table->contribution[position + 1][bytes[1]] ^
         table->contribution[position + 2][bytes[2]] ^ table->contribution[position + 3][bytes[3]];
}

static __always_inline __u32 toeplitz_port(const struct xvio_toeplitz_table* table, __u32 position,
                                           __u16 port) {
  const __u8* bytes = (const __u8*)&port;
  return table->contribution[position][bytes[0]] ^ table->contribution[position + 1][bytes[1]];
}

/* Orders the (address, port) pairs so that source <= destination, compared as
 * big-endian numbers; both directions of a flow then hash identically. */
static __always_inline void order_symmetric(struct parse_state* s, __u32 address_words,
                                            int use_ports) {
  int swap = 0, decided = 0;
  __u32 i, tmp;
  for (i = 0; i < 4; i++) {
    __u32 source, destination;
    if (i >= address_words || decided)
      break;
    source = bpf_ntohl(s->source_address[i]);
    destination = bpf_ntohl(s->destination_address[i]);
    if (source != destination) {
      swap = source > destination;
      decided = 1;
    }
  }
  if (!decided && use_ports)
    swap = bpf_ntohs(s->source_port) > bpf_ntohs(s->destination_port);
  if (!swap)
    return;
  for (i = 0; i < 4; i++) {
    tmp = s->source_address[i];
    s->source_address[i] = s->destination_address[i];
    s->destination_address[i] = tmp;
  }
  tmp = s->source_port;
  s->source_port = s->destination_port;
  s->destination_port = (__u16)tmp;
}

/* Chooses the hash type from the configured fields and hashes source address,
 * destination address[, source port, destination port] (the RSS input order).
 * Fragments always get the 2-tuple hash so all pieces of a datagram agree. */
static __always_inline void hash_flow(struct parse_state* s, __u32 hash_fields,
                                      __u32 config_flags) {
  const struct xvio_toeplitz_table* table;
  __u32 zero = 0, hash;
  __u16 type = XVIO_HASH_TYPE_NONE;
  __u8 protocol;
  int use_ports, l4_hashable;

  protocol = s->meta.l4_protocol;
  l4_hashable = s->has_ports && !(s->meta.flags & XVIO_META_FLAG_FRAGMENT);
  if (s->ip_version == 4) {
    if (l4_hashable && protocol == IPPROTO_TCP && (hash_fields & XVIO_HASH_FIELDS_TCPV4))
      type = XVIO_HASH_TYPE_TCPV4;
    else if (l4_hashable && protocol == IPPROTO_UDP && (hash_fields & XVIO_HASH_FIELDS_UDPV4))
      type = XVIO_HASH_TYPE_UDPV4;
    else if (hash_fields & XVIO_HASH_FIELDS_IPV4)
      type = XVIO_HASH_TYPE_IPV4;
  } else if (s->ip_version == 6) {
    int tcp = l4_hashable && protocol == IPPROTO_TCP;
    int udp = l4_hashable && protocol == IPPROTO_UDP;
    if (tcp && (hash_fields & XVIO_HASH_FIELDS_TCPV6_EX))
      type = XVIO_HASH_TYPE_TCPV6_EX;
    else if (tcp && (hash_fields & XVIO_HASH_FIELDS_TCPV6))
      type = XVIO_HASH_TYPE_TCPV6;
    else if (udp && (hash_fields & XVIO_HASH_FIELDS_UDPV6_EX))
      type = XVIO_HASH_TYPE_UDPV6_EX;
    else if (udp && (hash_fields & XVIO_HASH_FIELDS_UDPV6))
      type = XVIO_HASH_TYPE_UDPV6;
    else if (hash_fields & XVIO_HASH_FIELDS_IPV6_EX)
      type = XVIO_HASH_TYPE_IPV6_EX;
    else if (hash_fields & XVIO_HASH_FIELDS_IPV6)
      type = XVIO_HASH_TYPE_IPV6;
  }
  if (type == XVIO_HASH_TYPE_NONE)
    return;
  table = bpf_map_lookup_elem(&xvio_toeplitz, &zero);
  if (!table)
    return;
  use_ports =
      type != XVIO_HASH_TYPE_IPV4 && type != XVIO_HASH_TYPE_IPV6 && type != XVIO_HASH_TYPE_IPV6_EX;
  if (type >= XVIO_HASH_TYPE_IPV6_EX) {
    if (s->meta.flags & XVIO_META_FLAG_IPV6_HOME_ADDRESS)
      __builtin_memcpy(s->source_address, s->home_address, 16);
    if (s->meta.flags & XVIO_META_FLAG_IPV6_TYPE2_ROUTING)
      __builtin_memcpy(s->destination_address, s->routing_address, 16);
  }
  if (config_flags & XVIO_CONFIG_FLAG_SYMMETRIC_HASH) {
    order_symmetric(s, s->ip_version == 4 ? 1 : 4, use_ports);
    s->meta.flags |= XVIO_META_FLAG_SYMMETRIC_HASH;
  }

  if (s->ip_version == 4) {
    hash = toeplitz_word(table, 0, s->source_address[0]) ^
           toeplitz_word(table, 4, s->destination_address[0]);
    if (use_ports)
      hash ^=
          toeplitz_port(table, 8, s->source_port) ^ toeplitz_port(table, 10, s->destination_port);
  } else {
    hash = toeplitz_word(table, 0, s->source_address[0]) ^
           toeplitz_word(table, 4, s->source_address[1]) ^
           toeplitz_word(table, 8, s->source_address[2]) ^
           toeplitz_word(table, 12, s->source_address[3]) ^
           toeplitz_word(table, 16, s->destination_address[0]) ^
           toeplitz_word(table, 20, s->destination_address[1]) ^
           toeplitz_word(table, 24, s->destination_address[2]) ^
           toeplitz_word(table, 28, s->destination_address[3]);
    if (use_ports)
      hash ^=
          toeplitz_port(table, 32, s->source_port) ^ toeplitz_port(table, 34, s->destination_port);
  }
  s->meta.hash_type = type;
  s->meta.hash_value = hash;
}

/* ------------------------------------------------------------------ steer */

/* One 64-bit load that the compiler may neither split, merge nor repeat. */
#define READ_ONCE_U64(place) (*(volatile __u64*)&(place))

/* The port entry for `key` (bpf/xvio_shared.h, "port index"): from the index
 * with array loads, which the verifier inlines, or from xvio_ports when the
 * index cannot answer. Returns 0 and fills *value, or -1 when there is none. */
static __always_inline int find_port(const struct xvio_port_key* key,
                                     struct xvio_port_value* value) {
  const __u64 wanted = xvio_port_slot_key(key->mac, key->vlan_id);
  const __u32 home = xvio_port_slot_home(wanted);
  struct xvio_port_value* entry;
  __u32 probe;

#pragma unroll
  for (probe = 0; probe < XVIO_PORT_INDEX_PROBES; probe++) {
    __u32 index = (home + probe) & (XVIO_PORT_INDEX_SLOTS - 1);
    struct xvio_port_slot* slot = bpf_map_lookup_elem(&xvio_port_index, &index);
    __u64 slot_key, packed;
    if (!slot)
      break;
    slot_key = READ_ONCE_U64(slot->key);
    if (slot_key == XVIO_PORT_SLOT_EMPTY)
      return -1;
    if (slot_key != wanted)
      continue;
    packed = READ_ONCE_U64(slot->value);
    if (READ_ONCE_U64(slot->key) != wanted)
      break; /* the agent reused the slot meanwhile */
    value->port_id = (__u32)packed;
    value->flags = (__u32)(packed >> 32);
    return 0;
  }
  entry = bpf_map_lookup_elem(&xvio_ports, key);
  if (!entry)
    return -1;
  *value = *entry;
  return 0;
}

/* The class the destination MAC (+ outer VLAN) puts the frame in, and the
 * action configured for it. Clears *want_hash for a port whose frames the
 * agent never reads the hash of (XVIO_PORT_FLAG_NO_HASH). */
static __always_inline int classify(struct parse_state* s, const struct xvio_config* config,
                                    struct xvio_counters* counters, int* want_hash) {
  const __u8* mac = s->destination_mac;
  struct xvio_port_key key = {};
  struct xvio_port_value port;

  if ((mac[0] & mac[1] & mac[2] & mac[3] & mac[4] & mac[5]) == 0xff) {
    s->meta.flags |= XVIO_META_FLAG_BROADCAST;
    count(counters, XVIO_COUNTER_BROADCAST);
    return config->broadcast_action;
  }
  if (mac[0] & 0x01) {
    s->meta.flags |= XVIO_META_FLAG_MULTICAST;
    count(counters, XVIO_COUNTER_MULTICAST);
    return config->multicast_action;
  }
  __builtin_memcpy(key.mac, mac, 6);
  key.vlan_id = (s->meta.flags & XVIO_META_FLAG_VLAN_OUTER) ? s->meta.outer_vlan_id : 0;
  if (find_port(&key, &port) != 0) {
    s->meta.flags |= XVIO_META_FLAG_UNKNOWN_UNICAST;
    count(counters, XVIO_COUNTER_UNKNOWN_UNICAST);
    return config->unknown_unicast_action;
  }
  if (port.flags & XVIO_PORT_FLAG_DISABLED) {
    count(counters, XVIO_COUNTER_PORT_DISABLED);
    return XVIO_ACTION_DROP;
  }
  s->meta.port_id = port.port_id;
  if (port.flags & XVIO_PORT_FLAG_NO_HASH)
    *want_hash = 0;
  return XVIO_ACTION_REDIRECT;
}

static __always_inline int finish(struct xvio_counters* counters, int verdict) {
  count(counters, verdict == XDP_REDIRECT ? XVIO_COUNTER_REDIRECTED
                  : verdict == XDP_DROP   ? XVIO_COUNTER_DROPPED
                                          : XVIO_COUNTER_PASSED);
  return verdict;
}

static __always_inline int action_verdict(int action) {
  return action == XVIO_ACTION_DROP ? XDP_DROP : XDP_PASS;
}

static __always_inline void record_parse_error(struct xvio_counters* counters,
                                               struct parse_state* s, int error) {
  count(counters, XVIO_COUNTER_MALFORMED);
  if (error > 0 && error < XVIO_PARSE_ERROR_COUNT)
    count(counters, XVIO_COUNTER_PARSE_ERROR(error));
  s->meta.flags |= XVIO_META_FLAG_PARSE_ERROR;
  s->meta.parse_error = (__u8)error;
}

/* One body for both entry points; `multi_buffer` is a constant in each, so
 * the xdp build never asks for the length of fragments it cannot have. */
static __always_inline int steer(struct xdp_md* ctx, int multi_buffer) {
  __u32 zero = 0, slot, sockets_per_queue;
  struct xvio_counters* counters = bpf_map_lookup_elem(&xvio_counters, &zero);
  const struct xvio_config* config;
  struct xvio_metadata* meta;
  struct parse_state s = {};
  int action, error, verdict, want_hash = 1;

  count(counters, XVIO_COUNTER_RECEIVED);
  config = bpf_map_lookup_elem(&xvio_config, &zero);
  if (!config) {
    count(counters, XVIO_COUNTER_NO_CONFIG);
    return finish(counters, XDP_PASS);
  }
  s.meta.port_id = XVIO_PORT_ID_NONE;
  s.multi_buffer = (__u8)multi_buffer;

  /* L2 first: a frame nobody here wants is decided without looking deeper. */
  error = parse_l2(ctx, &s);
  if (error) {
    record_parse_error(counters, &s, error);
    /* unclassified: REDIRECT hands it to the agent with XVIO_PORT_ID_NONE */
    action = config->malformed_action;
    if (action == XVIO_ACTION_REDIRECT)
      goto redirect;
    return finish(counters, action_verdict(action));
  }
  action = classify(&s, config, counters, &want_hash);
  if (action != XVIO_ACTION_REDIRECT)
    return finish(counters, action_verdict(action));

  error = parse_network(ctx, &s, config->ipv6_ext_header_limit, config->hash_fields);
  if (error) {
    record_parse_error(counters, &s, error);
    action = config->malformed_action;
    if (action != XVIO_ACTION_REDIRECT)
      return finish(counters, action_verdict(action));
  } else if (want_hash || config->sockets_per_queue > 1) {
    /* the socket choice below needs the hash whatever the port wants */
    hash_flow(&s, config->hash_fields, config->flags);
  }

redirect:
  sockets_per_queue = config->sockets_per_queue;
  slot = ctx->rx_queue_index;
  if (sockets_per_queue > 1)
    slot = slot * sockets_per_queue + s.meta.hash_value % sockets_per_queue;
  /* bpf_redirect_map only records the target; the kernel redirects after the
   * program returns, so the metadata can be written once the socket is known
   * to be there. Frames that fall back to XDP_PASS (empty slot) thus reach the
   * host exactly as they came. */
  verdict = bpf_redirect_map(&xvio_xsks, slot, XDP_PASS);
  if (verdict != XDP_REDIRECT) {
    count(counters, XVIO_COUNTER_NO_SOCKET);
    return finish(counters, XDP_PASS);
  }
  s.meta.magic_version = XVIO_METADATA_MAGIC_VERSION;
  if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct xvio_metadata)) == 0) {
    meta = (void*)(long)ctx->data_meta;
    if ((void*)(meta + 1) <= (void*)(long)ctx->data)
      __builtin_memcpy(meta, &s.meta, sizeof(*meta));
  } else {
    /* no room or no metadata support: the agent sees no magic and
     * classifies the frame itself */
    count(counters, XVIO_COUNTER_METADATA_UNSUPPORTED);
  }
  return finish(counters, verdict);
}

SEC("xdp")
int xvio_steer(struct xdp_md* ctx) {
  return steer(ctx, 0);
}

/* The same program for uplinks whose frames may span several buffers. */
SEC("xdp.frags")
int xvio_steer_frags(struct xdp_md* ctx) {
  return steer(ctx, 1);
}
