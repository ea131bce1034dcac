#!/bin/bash
# Data-path test: real TCP/UDP through the rules kuberules applies. Usage: run.sh KUBERULES nft|nft-sharded|nft-large|ipt
# (nft-sharded: --nft-shards 4 with a state directory, so the second apply trusts fingerprints;
# nft-large: one table with a state directory, plus a service with 9,000 endpoints elsewhere, so
# that the hairpin set is split by the address's last byte).
#
#   client ns (192.168.50.100 and .101) --veth-- node ns (192.168.50.1, kuberules rules)
#                                                 |-- veth -- pod1 ns 10.244.0.2 (node-a)
#                                                 |-- veth -- pod2 ns 10.244.0.3 (node-a)
#                                                 `-- veth -- pod3 ns 10.244.1.2 (stands for node-b)
# Each pod runs server.py: TCP 8080 and UDP 5353 answer "<pod> <peer address it saw>".
# Prints one line per flow: "FLOW <name> <answer>=<count> ...". Every namespace is created here
# (names carry our PID) and removed on exit; the caller's namespace is not touched (the test runs
# this script under `unshare -n` as well). Connections time out after 1 s; servers stop by themselves.
set -u
B=$1; MODE=$2; DIR=$(cd "$(dirname "$0")" && pwd)
N=krn$$; C=krc$$; PODS="krp1$$ krp2$$ krp3$$"
STATE=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null
  for ns in $N $C $PODS; do ip netns del $ns 2>/dev/null; done
  rm -rf "$STATE"
}
trap cleanup EXIT
for ns in $N $C $PODS; do ip netns add $ns; ip -n $ns link set lo up; done

# Client: two source addresses on one link to the node; services and external IPs routed via the node.
ip link add ext netns $N type veth peer name eth0 netns $C
ip -n $N link set ext up; ip -n $N addr add 192.168.50.1/24 dev ext
ip -n $C link set eth0 up
ip -n $C addr add 192.168.50.100/24 dev eth0; ip -n $C addr add 192.168.50.101/24 dev eth0
ip -n $C route add default via 192.168.50.1

# Pods: one veth each; the node routes each pod address to its veth (proxy ARP answers for the gateway).
i=0
for P in $PODS; do
  i=$((i+1))
  case $i in 1) ip=10.244.0.2 gw=10.244.0.1;; 2) ip=10.244.0.3 gw=10.244.0.1;; 3) ip=10.244.1.2 gw=10.244.1.1;; esac
  ip link add v$i netns $N type veth peer name eth0 netns $P
  ip -n $P link set eth0 up; ip -n $P addr add $ip/24 dev eth0
  ip -n $N link set v$i up; ip -n $N addr add $gw/32 dev v$i; ip -n $N route add $ip/32 dev v$i
  ip netns exec $N sysctl -qw net.ipv4.conf.v$i.proxy_arp=1
  ip -n $P route add default via $gw dev eth0 onlink
  ip netns exec $P timeout 120 python3 "$DIR/server.py" pod$i &
done
# Routes for the service range and the external/LB addresses (as a node has), so traffic the rules
# do not DNAT reaches the filter chains instead of failing the route lookup.
ip -n $N route add 10.96.0.0/16 dev lo
ip -n $N route add 198.51.100.0/24 dev lo
ip netns exec $N sysctl -qw net.ipv4.ip_forward=1
# REJECT answers with ICMP, which the kernel rate-limits per peer (1/s after a burst of 6):
# lift the limit so every refused connection is refused at once.
ip netns exec $N sysctl -qw net.ipv4.icmp_ratelimit=0
sleep 1

ARGS="--node-name node-a --node-ip 192.168.50.1 --config $DIR/proxy-config.yaml $DIR/services.yaml"
if [ "$MODE" = nft-large ]; then
  python3 - "$STATE/big.yaml" <<'PY'
import sys
out = ["apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: t}\n"
       "spec:\n  clusterIP: 10.96.0.99\n  ports: [{name: http, port: 80, protocol: TCP}]\n"]
for k in range(9):
    eps = "".join("  - {addresses: [10.250.%d.%d], conditions: {ready: true}}\n" % (n // 250, n % 250 + 1)
                  for n in range(k * 1000, (k + 1) * 1000))
    out.append("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n"
               "metadata: {name: big-%d, namespace: t, labels: {kubernetes.io/service-name: big}}\n"
               "ports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n%s" % (k, eps))
open(sys.argv[1], "w").write("---\n".join(out))
PY
  ARGS="$ARGS $STATE/big.yaml"
fi
apply() {
  if [ "$MODE" = nft ]; then
    ip netns exec $N "$B" apply --backend nftables --ip-family ipv4 $ARGS "$1" >/dev/null || exit 3
  elif [ "$MODE" = nft-large ]; then
    ip netns exec $N "$B" apply --backend nftables --ip-family ipv4 --state-dir "$STATE/st" $ARGS "$1" >/dev/null || exit 3
    # The pods' addresses are in the split hairpin sets (2 and 3 in hairpin-02 and -03 of 4).
    ip netns exec $N nft list set ip kuberules hairpin-02 | grep -q "10.244.0.2 . 10.244.0.2" || exit 4
  elif [ "$MODE" = nft-sharded ]; then
    ip netns exec $N "$B" apply --backend nftables --ip-family ipv4 --nft-shards 4 --state-dir "$STATE" $ARGS "$1" >/dev/null || exit 3
  else
    ip netns exec $N "$B" apply --backend iptables --state-dir "$STATE" $ARGS "$1" >/dev/null || exit 3
  fi
}
flow() { local name=$1 ns=$2; shift 2; echo "FLOW $name $(ip netns exec $ns timeout 100 python3 "$DIR/client.py" "$@")"; }
P1=krp1$$

apply "$DIR/slices.yaml"
flow pod-clusterip         $P1 tcp 10.96.0.10 80 90
flow pod-udp               $P1 udp 10.96.0.10 53 3
flow client-clusterip      $C  tcp 10.96.0.10 80 9
flow client-nodeport       $C  tcp 192.168.50.1 30080 9
flow client-externalip     $C  tcp 198.51.100.10 80 6
flow client-local-nodeport $C  tcp 192.168.50.1 30081 12
if [ "$MODE" != ipt ]; then
  # eTP=Local with ClientIP affinity: the client is recorded once, under the local chain's key.
  echo "FLOW records-client-local entries=$(ip netns exec $N nft list ruleset | grep -c '192\.168\.50\.100 \. [0-9]* \. [0-9]* timeout')"
fi
flow client-lb-allowed     $C  tcp 198.51.100.20 80 6 192.168.50.100
flow client-lb-blocked     $C  tcp 198.51.100.20 80 2 192.168.50.101
flow pod-noendpoints       $P1 tcp 10.96.0.11 80 3
flow pod-unknownport       $P1 tcp 10.96.0.10 81 2
flow pod-affinity          $P1 tcp 10.96.0.13 80 12
flow node-affinity         $N  tcp 10.96.0.13 80 12
if [ "$MODE" = nft ] || [ "$MODE" = nft-sharded ]; then
  # Fill the affinity map of the table with 10.96.0.13 up to its size (the pod and the node
  # are there already): a new client can no longer be recorded and must still reach an endpoint.
  ip netns exec $N nft list maps | awk '/^table/ {t = $2 " " $3} /map affinity / {print t}' |
  while read -r fam tab; do
    size=$(ip netns exec $N nft list map $fam $tab affinity | awk '$1 == "size" {print $2}')
    have=$(ip netns exec $N nft list map $fam $tab affinity | grep -o expires | wc -l)
    python3 -c "import sys; print('add element $fam $tab affinity { ' + ', '.join('100.%d.%d.%d . 1 . 2 : 10.244.0.2 . 8080' % (64 + i // 65536, i // 256 % 256, i % 256) for i in range($size - $have)) + ' }')" > "$STATE/fill.nft"
    ip netns exec $N nft -f "$STATE/fill.nft" >/dev/null 2>&1 || exit 3
    echo "add element $fam $tab affinity { 100.100.100.100 . 1 . 2 : 10.244.0.2 . 8080 }" | ip netns exec $N nft -f - 2>/dev/null && exit 5
  done
  flow client-affinity-full $C tcp 10.96.0.13 80 6
fi
apply "$DIR/slices-changed.yaml"
flow pod-after-change      $P1 tcp 10.96.0.10 80 12
flow pod-affinity-changed  $P1 tcp 10.96.0.13 80 6
if [ "$MODE" != ipt ]; then
  SD=$STATE; [ "$MODE" = nft-large ] && SD=$STATE/st
  ip netns exec $N "$B" cleanup --backend nftables --state-dir "$SD" >/dev/null || exit 3
  echo "LEFT $(ip netns exec $N nft list ruleset | wc -l)"
else
  ip netns exec $N "$B" cleanup --backend iptables --state-dir "$STATE" >/dev/null || exit 3
  echo "LEFT $(ip netns exec $N iptables-save | grep -c KUBE-)"
fi
flow after-cleanup         $P1 tcp 10.96.0.10 80 1
