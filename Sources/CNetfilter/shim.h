#ifndef KUBERULES_CNETFILTER_SHIM_H
#define KUBERULES_CNETFILTER_SHIM_H
// Standard headers first, then <netinet/in.h> BEFORE any <linux/...> header:
// otherwise a clean build fails with "'in_addr' has different definitions".
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/genetlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/ip_vs.h>
#include <libmnl/libmnl.h>
#include <libnftnl/table.h>
#include <libnftnl/chain.h>
#include <libnftnl/set.h>
#include <libnftnl/rule.h>
#include <libnftnl/expr.h>
#include <libnftnl/batch.h>
#include <libnftnl/gen.h>
#include <libnftnl/common.h>
#include <libnftnl/udata.h>

static inline size_t kr_mnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }
static inline char *kr_mnl_nlmsg_batch_current(struct mnl_nlmsg_batch *b) { return (char *)mnl_nlmsg_batch_current(b); }

#endif
